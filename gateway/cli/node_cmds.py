"""Verbs: node list (the processes sharing this database, alive or not)."""

from __future__ import annotations

import argparse
from typing import Any

from directory.nodes import list_nodes
from gateway.cli.common import EXIT_OK, add_json, emit, with_services


def register(sub: Any) -> None:
    n = sub.add_parser("node", help="gateway processes sharing the database").add_subparsers(
        dest="sub", metavar="VERB")
    p = n.add_parser("list", help="every registered node with its heartbeat age")
    add_json(p)
    p.set_defaults(func=node_list)


@with_services
async def node_list(s: Any, a: argparse.Namespace) -> int:
    emit(a, await list_nodes(s.db.pool, s.cfg.node.dead_seconds),
         ["id", "host", "pid", "started", "age_seconds", "alive"])
    return EXIT_OK
