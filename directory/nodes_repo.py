"""Node rows: the only SQL of node identity (`directory.nodes`).

A node is one gateway process. It inserts its row at start, renews `heartbeat` every few
seconds and deletes the row on a clean stop. Liveness is decided by the database clock
alone (`now() - heartbeat`), so hosts with skewed clocks agree on who is dead.
"""

from __future__ import annotations

from typing import Any, TypeAlias

# A connection or a pool's proxy of one (duck-typed alike).
Conn: TypeAlias = Any


async def register(conn: Conn, node_id: str, host: str, pid: int) -> None:
    await conn.execute(
        "insert into nodes(id, host, pid) values ($1, $2, $3)"
        " on conflict (id) do update set heartbeat = now()", node_id, host, pid)


async def beat(conn: Conn, node_id: str, host: str, pid: int) -> bool:
    """Renew our heartbeat; False when our row was gone (others declared us dead and
    removed it) and had to be written again."""
    res = await conn.execute("update nodes set heartbeat = now() where id = $1", node_id)
    if res.split()[-1] != "0":
        return True
    await register(conn, node_id, host, pid)
    return False


async def dead(conn: Conn, dead_seconds: float) -> list[str]:
    """Ids of nodes whose heartbeat is older than `dead_seconds`."""
    rows = await conn.fetch(
        "select id from nodes where heartbeat < now() - make_interval(secs => $1) order by id",
        float(dead_seconds))
    return [r["id"] for r in rows]


async def forget(conn: Conn, node_ids: list[str], dead_seconds: float) -> int:
    """Delete rows of nodes still dead (a node that came back in between keeps its row)."""
    res = await conn.execute(
        "delete from nodes where id = any($1::text[])"
        " and heartbeat < now() - make_interval(secs => $2)", node_ids, float(dead_seconds))
    return int(res.split()[-1])


async def remove(conn: Conn, node_id: str) -> None:
    await conn.execute("delete from nodes where id = $1", node_id)


async def listing(conn: Conn, dead_seconds: float) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "select id, host, pid, started, heartbeat,"
        " heartbeat >= now() - make_interval(secs => $1) as alive,"
        " extract(epoch from now() - heartbeat)::float8 as age from nodes order by started",
        float(dead_seconds))
    return [{"id": r["id"], "host": r["host"], "pid": r["pid"],
             "started": r["started"].isoformat(), "heartbeat": r["heartbeat"].isoformat(),
             "age_seconds": round(r["age"], 1), "alive": r["alive"]} for r in rows]


LIVE_OWNER_SQL = ("exists (select 1 from nodes n where n.id = {col}"
                  " and n.heartbeat >= now() - make_interval(secs => {secs}))")


def live_owner(col: str, secs_param: str) -> str:
    """A SQL condition: the owner in column `col` is a live node (for other repos' leases)."""
    return LIVE_OWNER_SQL.format(col=col, secs=secs_param)
