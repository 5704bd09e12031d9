"""Verbs: node list / nodes (the processes sharing this database, alive or not, with what
each holds: XMPP sessions, room homes, hand-offs waiting, queue leases)."""

from __future__ import annotations

import argparse
from typing import Any

from directory.nodes import list_nodes
from gateway.cli.common import EXIT_OK, add_json, emit, with_services
from mailrelay.queue.repo import leases_by_owner
from xmpp import cluster_repo

COLUMNS = ["id", "host", "pid", "started", "age_seconds", "alive", "sessions", "rooms",
           "handoffs", "queue_leases"]


def register(sub: Any) -> None:
    n = sub.add_parser("node", help="gateway processes sharing the database").add_subparsers(
        dest="sub", metavar="VERB")
    p = n.add_parser("list", help="every registered node with its heartbeat age")
    add_json(p)
    p.set_defaults(func=node_list)
    p = sub.add_parser("nodes", help="alias of `node list`")
    add_json(p)
    p.set_defaults(func=node_list)


async def nodes_report(pool: Any, dead_seconds: float) -> list[dict[str, Any]]:
    """Each node with heartbeat age, XMPP sessions, rooms it is home of,
    hand-offs waiting for it and queue rows it leases."""
    rows = await list_nodes(pool, dead_seconds)
    async with pool.acquire() as conn:
        counts = await cluster_repo.counts(conn)
        homes = await cluster_repo.homes(conn)
        leases = await leases_by_owner(conn)
    for r in rows:
        c = counts.get(r["id"], {})
        r["sessions"] = c.get("sessions", 0)
        r["handoffs"] = c.get("handoffs", 0)
        r["rooms"] = homes.get(r["id"], 0)
        r["queue_leases"] = leases.get(r["id"], 0)
    return rows


@with_services
async def node_list(s: Any, a: argparse.Namespace) -> int:
    emit(a, await nodes_report(s.db.pool, s.cfg.node.dead_seconds), COLUMNS)
    return EXIT_OK
