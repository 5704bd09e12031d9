"""The only SQL of XMPP across nodes (`xmpp.cluster`): the session registry
(`xmpp_sessions`), the hand-off table (`xmpp_handoff`), the rooms' home leases
(`xmpp_room_homes`) and NOTIFY.

Liveness of an owner is the `nodes` table's rule (`directory.nodes_repo.live_owner`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeAlias

from directory.nodes_repo import live_owner

Conn: TypeAlias = Any

REGISTRY_CHANNEL = "cxgw_xmpp_sessions"


async def upsert_session(conn: Conn, full: str, bare: str, node_id: str, priority: int,
                         available: bool, presence: str | None, csi: str,
                         shared: str) -> datetime:
    """Write our row for `full` (a bind takes the row over from any other node: the new
    session wins); returns its bind time by the database clock."""
    row = await conn.fetchrow(
        "insert into xmpp_sessions(full_jid, bare, node_id, priority, available, presence,"
        " csi, shared) values ($1,$2,$3,$4,$5,$6,$7,$8)"
        " on conflict (full_jid) do update set node_id = excluded.node_id,"
        " priority = excluded.priority, available = excluded.available,"
        " presence = excluded.presence, csi = excluded.csi, shared = excluded.shared,"
        " bound_at = case when xmpp_sessions.node_id = excluded.node_id"
        "  then xmpp_sessions.bound_at else clock_timestamp() end"
        " returning bound_at", full, bare, node_id, priority, available, presence, csi,
        shared)
    return row["bound_at"]  # type: ignore[no-any-return]


async def update_session(conn: Conn, full: str, node_id: str, priority: int,
                         available: bool, presence: str | None, csi: str,
                         shared: str) -> bool:
    """Presence or CSI of our session changed; False when the row is no longer ours."""
    res = await conn.execute(
        "update xmpp_sessions set priority = $3, available = $4, presence = $5, csi = $6,"
        " shared = $7 where full_jid = $1 and node_id = $2", full, node_id, priority,
        available, presence, csi, shared)
    return res.split()[-1] != "0"


async def delete_session(conn: Conn, full: str, node_id: str) -> None:
    """Remove our row for `full` (a row another node took over stays)."""
    await conn.execute("delete from xmpp_sessions where full_jid = $1 and node_id = $2",
                       full, node_id)


async def delete_node_sessions(conn: Conn, node_id: str) -> int:
    res = await conn.execute("delete from xmpp_sessions where node_id = $1", node_id)
    return int(res.split()[-1])


async def live_sessions(conn: Conn, exclude_node: str, dead_seconds: float) -> list[Any]:
    """Rows of other live nodes (the mirror of a starting or reconnected node)."""
    return list(await conn.fetch(
        "select full_jid, node_id, priority, available, presence, csi, shared, bound_at"
        " from xmpp_sessions s where node_id <> $1 and " + live_owner("s.node_id", "$2"),
        exclude_node, float(dead_seconds)))


async def session_row(conn: Conn, full: str) -> Any:
    return await conn.fetchrow(
        "select full_jid, node_id, priority, available, presence, csi, shared, bound_at"
        " from xmpp_sessions where full_jid = $1", full)


async def reap_sessions(conn: Conn, dead_seconds: float) -> list[tuple[str, str]]:
    """Delete the rows of owners that are not live nodes: (node id, full JID) of each."""
    rows = await conn.fetch(
        "delete from xmpp_sessions s where not " + live_owner("s.node_id", "$1")
        + " returning node_id, full_jid", float(dead_seconds))
    return [(r["node_id"], r["full_jid"]) for r in rows]


async def insert_handoff(conn: Conn, node_id: str, full: str, data: bytes) -> int:
    return int(await conn.fetchval(
        "insert into xmpp_handoff(node_id, full_jid, stanza) values ($1,$2,$3) returning id",
        node_id, full, data))


async def fetch_handoff(conn: Conn, hid: int) -> bytes | None:
    data = await conn.fetchval("select stanza from xmpp_handoff where id = $1", hid)
    return bytes(data) if data is not None else None


async def delete_handoffs(conn: Conn, ids: list[int]) -> None:
    await conn.execute("delete from xmpp_handoff where id = any($1::bigint[])", ids)


async def dead_handoffs(conn: Conn, dead_seconds: float, resume_window: float = 0.0,
                        limit: int = 500) -> list[Any]:
    """Hand-offs addressed to owners that are not live nodes, locked for this
    transaction (two survivors never take the same row). A row placed on a resumable
    stream-managed session (`sm_id`), and every later row for that session, waits for the
    client's resumption attempt (`settle_resume`) until the owner has been dead for
    `resume_window` seconds more: only the client knows which of them it received."""
    return list(await conn.fetch(
        "select id, full_jid, stanza from xmpp_handoff h where not "
        + live_owner("h.node_id", "$1")
        + " and (not " + live_owner("h.node_id", "$3")
        + " or not exists (select 1 from xmpp_handoff s where s.node_id = h.node_id"
        " and s.full_jid = h.full_jid and s.sm_id is not null and s.id <= h.id))"
        " order by id limit $2 for update skip locked", float(dead_seconds), limit,
        float(dead_seconds + resume_window)))


async def mark_handoffs(conn: Conn, ids: list[int], sm_ids: list[str],
                        seqs: list[int]) -> None:
    """Rows placed on stream-managed sessions: the resumption id and stream position."""
    # One primary-key update per row, pipelined (a join with unnest() may be planned as
    # a scan of the whole, heavily churned table).
    await conn.executemany(
        "update xmpp_handoff set sm_id = $2, seq = $3 where id = $1",
        list(zip(ids, sm_ids, seqs, strict=True)))


async def settle_resume(conn: Conn, sm_id: str, owner: str, h: int) -> tuple[int, int]:
    """A client of `owner` asked to resume `sm_id` having received `h` stanzas
    (XEP-0198 §5) on a node that does not hold it: the rows it received are deleted,
    the others are released to the ordinary rules (the owner's ledger, or the reaper).
    Returns (deleted, released)."""
    # XEP-0198 §4: counts wrap at 2^32; seq is acknowledged when h - seq < 2^31 (mod 2^32)
    gone = await conn.execute(
        "delete from xmpp_handoff where sm_id = $1 and split_part(full_jid, '/', 1) = $2"
        " and (($3::bigint - seq) % 4294967296 + 4294967296) % 4294967296 < 2147483648",
        sm_id, owner, h)
    kept = await conn.execute(
        "update xmpp_handoff set sm_id = null, seq = null where sm_id = $1"
        " and split_part(full_jid, '/', 1) = $2", sm_id, owner)
    return int(gone.split()[-1]), int(kept.split()[-1])


async def pending_handoffs(conn: Conn, node_id: str) -> list[Any]:
    """Our own undelivered hand-offs (read after a LISTEN reconnect)."""
    return list(await conn.fetch(
        "select id, full_jid, stanza from xmpp_handoff where node_id = $1 order by id",
        node_id))


async def notify(conn: Conn, channel: str, payload: str) -> None:
    await conn.execute("select pg_notify($1, $2)", channel, payload)


async def counts(conn: Conn) -> dict[str, dict[str, int]]:
    """Sessions and pending hand-offs per node (`cxgw nodes`)."""
    out: dict[str, dict[str, int]] = {}
    for r in await conn.fetch("select node_id, count(*) n from xmpp_sessions group by 1"):
        out.setdefault(r["node_id"], {})["sessions"] = int(r["n"])
    for r in await conn.fetch("select node_id, count(*) n from xmpp_handoff group by 1"):
        out.setdefault(r["node_id"], {})["handoffs"] = int(r["n"])
    return out


async def claim_room(conn: Conn, room: str, node_id: str, dead_seconds: float) -> str:
    """Become the home of `room` unless a live node is; returns the home's node id."""
    got = await conn.fetchval(
        "insert into xmpp_room_homes(room, node_id) values ($1, $2)"
        " on conflict (room) do update set node_id = excluded.node_id, since = case"
        " when xmpp_room_homes.node_id = excluded.node_id then xmpp_room_homes.since"
        " else now() end where xmpp_room_homes.node_id = excluded.node_id or not "
        + live_owner("xmpp_room_homes.node_id", "$3") + " returning node_id",
        room, node_id, float(dead_seconds))
    if got is not None:
        return str(got)
    return str(await conn.fetchval("select node_id from xmpp_room_homes where room = $1",
                                   room))


async def room_homes(conn: Conn, dead_seconds: float) -> dict[str, str]:
    """Room → home node, for rooms whose home is a live node (a node's mirror)."""
    return {r["room"]: r["node_id"] for r in await conn.fetch(
        "select room, node_id from xmpp_room_homes h where "
        + live_owner("h.node_id", "$1"), float(dead_seconds))}


async def orphan_rooms(conn: Conn, dead_seconds: float) -> list[str]:
    """Rooms whose home is not a live node and that still have occupants (taken over by
    a survivor; a room nobody is in gets a home again when someone next uses it). Only
    once the dead home's sessions are reaped: the new home then no longer sees them as
    live and lets them leave the room."""
    return [r["room"] for r in await conn.fetch(
        "select room from xmpp_room_homes h where not " + live_owner("h.node_id", "$1")
        + " and exists (select 1 from xmpp_muc_occupant o where o.room = h.room)"
        " and not exists (select 1 from xmpp_sessions s where s.node_id = h.node_id)"
        " order by room", float(dead_seconds))]


async def release_rooms(conn: Conn, node_id: str) -> None:
    await conn.execute("delete from xmpp_room_homes where node_id = $1", node_id)


async def homes(conn: Conn) -> dict[str, int]:
    """Rooms each node is home of (`cxgw nodes`)."""
    return {r["node_id"]: int(r["n"]) for r in await conn.fetch(
        "select node_id, count(*) n from xmpp_room_homes group by 1")}
