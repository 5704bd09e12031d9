"""Verbs: serve, config example|check, db migrate|status, demo seed."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from cxkernel import config as config_mod
from gateway.cli.common import (
    EXIT_OK,
    add_json,
    emit,
    guarded,
    load_config,
    run_async,
    with_services,
)


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the server (all listeners) until SIGINT/SIGTERM")
    p.set_defaults(func=cmd_serve)

    cfg = sub.add_parser("config", help="configuration").add_subparsers(dest="sub", metavar="VERB")
    cfg.add_parser("example", help="print a complete documented example").set_defaults(func=cmd_config_example)
    cfg.add_parser("check", help="parse the config and report the first problem").set_defaults(func=cmd_config_check)

    db = sub.add_parser("db", help="database").add_subparsers(dest="sub", metavar="VERB")
    db.add_parser("migrate", help="apply pending migrations").set_defaults(func=cmd_db_migrate)
    st = db.add_parser("status", help="show migrations and whether they are applied")
    add_json(st)
    st.set_defaults(func=cmd_db_status)

    demo = sub.add_parser("demo", help="demo data").add_subparsers(dest="sub", metavar="VERB")
    s = demo.add_parser("seed", help="create a city-shaped directory (93 units, 2,700 staff)")
    s.add_argument("--count", type=int, default=2700, help="number of accounts (default 2700)")
    s.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    s.add_argument("--passwords", metavar="FILE",
                   help="where to write address,password (default <state_dir>/demo-passwords.csv)")
    s.set_defaults(func=cmd_demo_seed)


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pgserver").setLevel(logging.WARNING)


def cmd_serve(args: argparse.Namespace) -> int:
    def run() -> int:
        cfg = load_config(args)
        setup_logging(cfg.server.log_level)
        from gateway.app import run_server
        run_async(run_server(cfg))
        return EXIT_OK
    return guarded(run)


def cmd_config_example(args: argparse.Namespace) -> int:
    print(config_mod.example())
    return EXIT_OK


def cmd_config_check(args: argparse.Namespace) -> int:
    def run() -> int:
        cfg = load_config(args)
        print(f"config ok ({cfg.source or 'built-in defaults'})")
        return EXIT_OK
    return guarded(run)


@with_services
async def cmd_db_migrate(s: Any, args: argparse.Namespace) -> int:
    from gateway.db import migrate
    async with s.db.pool.acquire() as conn:
        applied = await migrate(conn)
    print(f"{len(applied)} migration(s) applied" if applied else "database is up to date")
    return EXIT_OK


@with_services
async def cmd_db_status(s: Any, args: argparse.Namespace) -> int:
    from gateway.db import migration_status
    async with s.db.pool.acquire() as conn:
        rows = await migration_status(conn)
    emit(args, rows, ["component", "version", "name", "applied", "applied_at"])
    return EXIT_OK


@with_services
async def cmd_demo_seed(s: Any, args: argparse.Namespace) -> int:
    from directory import demo
    from gateway.cli.progress import Progress
    with Progress("demo seed") as bar:
        added, rows = await demo.seed(s.directory, args.count, args.seed, progress=bar.update)
    path = Path(args.passwords) if args.passwords else s.cfg.state_path / "demo-passwords.csv"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(demo.passwords_csv(rows))
    print(f"{added} units and {len(rows)} accounts created; demo passwords in {path}")
    return EXIT_OK
