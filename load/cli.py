"""`cxgw load ...`: the load harness as CLI subcommands.

    cxgw load SCENARIO --target HOST[:PORT] [knobs]    run a scenario (see `cxgw load list`)
    cxgw load compare A.json B.json                    ratios B/A: throughput, percentiles
    cxgw load import-smtp-source --cmd ... --elapsed S turn a Postfix smtp-source run into JSON
    cxgw load list                                     scenarios, implemented and planned

The main CLI calls `register(subparsers)`; each verb stores `func(args) -> int` in the
parsed args. `python -m load ...` runs the same parser standalone.

Exit codes: 0 all delivered; 1 some deliveries failed or were lost; 2 bad options or
unreadable files; 3 the books do not balance (a harness bug); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

from load.compare import compare, print_comparison
from load.context import RunContext
from load.options import OptionError
from load.progress import live_progress
from load.report import write_report
from load.result import build_result, print_summary, read_json, write_json
from load.scenarios import PLANNED, SCENARIOS


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `load` command group to an argparse subparsers object."""
    p = subparsers.add_parser(
        "load", help="drive load against a server and measure it",
        description="Load harness: speaks SMTP/IMAP as a client to any server (ours or a "
                    "peer's) and reports exact accounting, HDR latency percentiles and "
                    "throughput. Targets must be loopback unless --allow-remote.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="load_command", metavar="SCENARIO", required=True)
    for name, sc in SCENARIOS.items():
        mod = sys.modules.get(sc.run.__module__)
        sp = sub.add_parser(name, help=sc.help, description=(mod.__doc__ if mod else sc.help),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sc.add_arguments(sp)
        sp.set_defaults(func=run_scenario_cmd, scenario=name, **sc.defaults)

    cp = sub.add_parser("compare", help="compare two result files (ratios B/A)")
    cp.add_argument("a", metavar="A.json")
    cp.add_argument("b", metavar="B.json")
    cp.add_argument("--json", default=None, metavar="FILE", help="write the ratios as JSON")
    cp.set_defaults(func=compare_cmd)

    ip = sub.add_parser("import-smtp-source", help="convert a Postfix smtp-source run to JSON",
                        description=_doc("load.smtp_source"),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ip.add_argument("--elapsed", default=None,
                    help="seconds, or the text `time` printed (e.g. 'real 0m3.41s')")
    ip.add_argument("--time-output", default=None, metavar="FILE",
                    help="file holding what `time` printed")
    ip.add_argument("--count", type=int, default=None, help="messages sent (default: -m in --cmd)")
    ip.add_argument("--cmd", default=None, help="the smtp-source command line that was run")
    ip.add_argument("--counter", default=None, metavar="FILE", help="stdout of smtp-source -c")
    ip.add_argument("--warnings", default=None, metavar="FILE", help="stderr of smtp-source")
    ip.add_argument("--target", default=None, help="label for the target")
    ip.add_argument("--json", required=True, metavar="FILE", help="where to write the result")
    ip.add_argument("--quiet", "-q", action="store_true")
    ip.set_defaults(func=import_smtp_source_cmd)

    lp = sub.add_parser("list", help="list scenarios")
    lp.set_defaults(func=list_cmd)
    return p


def _doc(module: str) -> str:
    __import__(module)
    return sys.modules[module].__doc__ or ""


def _err(msg: str) -> None:
    print(f"cxgw load: error: {msg}", file=sys.stderr)


def _run_coro(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run on uvloop when available (as the server does)."""
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    except ImportError:
        return asyncio.run(coro)


async def run_scenario(ctx: RunContext, args: argparse.Namespace) -> dict[str, Any]:
    """Run one scenario to completion (or interruption) and return its result dict."""
    sc = SCENARIOS[ctx.scenario]
    async with live_progress(ctx, enabled=not args.quiet):
        try:
            await sc.run(ctx, args)
        except asyncio.CancelledError:  # Ctrl-C: keep what we measured
            ctx.completed = False
            ctx.extra["interrupted"] = True
    return build_result(ctx)


def run_scenario_cmd(args: argparse.Namespace) -> int:
    try:
        ctx = RunContext.from_args(args.scenario, args)
        result = _run_coro(run_scenario(ctx, args))
    except (OptionError, OSError) as e:
        _err(str(e))
        return 2
    except KeyboardInterrupt:
        return 130
    if args.json:
        write_json(result, args.json)
    if args.report:
        write_report(result, args.report)
    if not args.quiet:
        print_summary(result)
        for label, path in (("json", args.json), ("report", args.report)):
            if path:
                print(f"{label}: {path}")
    if not result["balanced"]:
        return 3
    if result.get("interrupted"):
        return 130
    return 1 if result["failed"] or result["lost"] else 0


def compare_cmd(args: argparse.Namespace) -> int:
    try:
        a, b = read_json(args.a), read_json(args.b)
    except (OSError, ValueError) as e:
        _err(str(e))
        return 2
    if args.json:
        write_json({"a": args.a, "b": args.b, "ratios": compare(a, b)}, args.json)
    print_comparison(a, b, (args.a, args.b))
    return 0


def import_smtp_source_cmd(args: argparse.Namespace) -> int:
    from load.smtp_source import parse_elapsed, to_result

    def read(path: str | None) -> str | None:
        if path is None:
            return None
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()

    try:
        text = args.elapsed if args.elapsed is not None else read(args.time_output)
        if text is None:
            raise ValueError("give --elapsed or --time-output")
        result = to_result(elapsed=parse_elapsed(text), count=args.count, cmd=args.cmd,
                           counter_text=read(args.counter), warnings_text=read(args.warnings),
                           target=args.target)
    except (OSError, ValueError) as e:
        _err(str(e))
        return 2
    write_json(result, args.json)
    if not args.quiet:
        print_summary(result)
    return 0


def list_cmd(args: argparse.Namespace) -> int:
    for name, sc in SCENARIOS.items():
        print(f"{name:16} {sc.help}")
    for name in PLANNED:
        print(f"{name:16} (planned)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cxgw")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: `python -m load SCENARIO ...` (the `load` word is implied)."""
    args = build_parser().parse_args(["load", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))
