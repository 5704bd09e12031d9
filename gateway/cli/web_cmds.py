"""Verbs: web install — fetch Converse.js with npm for the web chat at /chat/."""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any

from gateway.cli.common import EXIT_FAIL, EXIT_OK, guarded, load_config


def register(sub: Any) -> None:
    w = sub.add_parser("web", help="the web chat").add_subparsers(dest="sub", metavar="VERB")
    p = w.add_parser("install", help="fetch Converse.js with npm into <state_dir>/web")
    p.add_argument("--version", default=None, help="converse.js version (default: tested one)")
    p.set_defaults(func=web_install)


def web_install(args: argparse.Namespace) -> int:
    def run() -> int:
        from gateway import webchat
        cfg = load_config(args)
        try:
            where = webchat.install(cfg, args.version or webchat.DEFAULT_VERSION)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            print(f"cxgw: {exc}", file=sys.stderr)
            return EXIT_FAIL
        print(f"web chat installed in {where}; served at /chat/")
        return EXIT_OK
    return guarded(run)
