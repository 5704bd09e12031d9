"""`cxgw`: the admin CLI. Each verb parses, calls one service function, renders the result."""

from __future__ import annotations

import argparse
import importlib
import sys

from gateway.cli import admin, directory_cmds

# Verb modules: each has `register(subparsers)`. Protocol issues add theirs here.
VERB_MODULES = [admin, directory_cmds]
OPTIONAL_VERB_MODULES = ["gateway.cli.mail_cmds", "gateway.cli.doc_cmds", "load.cli",
                         "gateway.cli.node_cmds"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cxgw", description="cx-gateway: mail, IMAP, XMPP and "
                                "sealed official documents for a city government")
    p.add_argument("--config", "-c", metavar="FILE", help="TOML config (default: $CXGW_CONFIG or built-in defaults)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod in VERB_MODULES:
        mod.register(sub)
    for name in OPTIONAL_VERB_MODULES:
        try:
            importlib.import_module(name).register(sub)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            if name == "load.cli":  # the harness's extra is not installed
                _register_missing_load(sub, exc.name or "?")
                continue
            raise
    return p


def _register_missing_load(sub: argparse._SubParsersAction, missing: str) -> None:
    """`cxgw load` without the `.[load]` extra: say how to get it instead of a traceback."""
    def explain(_args: argparse.Namespace) -> int:
        print(f"cxgw load needs the load harness's extra (missing module: {missing}); "
              "install it with: .venv/bin/pip install -e '.[load]'", file=sys.stderr)
        return 2
    p = sub.add_parser("load", help="load harness (needs the .[load] extra)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=explain)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except BrokenPipeError:  # `cxgw user list | head`
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
