"""MUC persistence (the package's only SQL): rooms with config and subject, affiliations,
recent history, and occupancy (issue 14: each occupant session of a room with its nick,
role, node and last presence, so a room's new home keeps its occupants). Rooms are read
at start and by a node that becomes a room's home; everything is written behind the hot
path (``writer``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg


@dataclass
class RoomRow:
    jid: str
    unit: str | None
    config: dict[str, Any]
    subject: str = ""
    subject_nick: str = ""
    #: bare JID → (affiliation, managed by the directory)
    affiliations: dict[str, tuple[str, bool]] = field(default_factory=dict)
    #: (stanza_id, nick, sender, stanza XML, stamp as epoch seconds), oldest first
    history: list[tuple[str, str, str, str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class HistoryRow:
    room: str
    stanza_id: str
    nick: str
    sender: str
    stanza: str
    stamp: float
    keep: int  # the room's history length: older rows are trimmed


@dataclass(frozen=True)
class OccupantRow:
    room: str
    full: str
    nick: str
    role: str
    node: str      # the node holding the session
    presence: str  # its last presence to the room (XML)


class MucStoreLike(Protocol):
    async def load(self, history: int) -> list[RoomRow]: ...
    async def load_room(self, jid: str, history: int) -> RoomRow | None: ...
    async def save_room(self, row: RoomRow) -> None: ...
    async def delete_room(self, jid: str) -> None: ...
    async def add_history(self, rows: list[HistoryRow]) -> None: ...
    async def occupants(self, room: str) -> list[OccupantRow]: ...
    async def write_occupants(self, put: list[OccupantRow],
                              gone: list[tuple[str, str]]) -> None: ...


class MucStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def load(self, history: int) -> list[RoomRow]:
        return await self._load(history, None)

    async def load_room(self, jid: str, history: int) -> RoomRow | None:
        """One room as stored now (a node that becomes its home reads it)."""
        rows = await self._load(history, jid)
        return rows[0] if rows else None

    async def _load(self, history: int, jid: str | None) -> list[RoomRow]:
        """Every room (`jid` None) or one room, with affiliations and recent history."""
        room_where = "" if jid is None else " where jid = $1"
        where = "" if jid is None else " where room = $1"
        hist_where = "" if jid is None else " where room = $2"
        one: list[Any] = [] if jid is None else [jid]
        async with self.pool.acquire() as conn:
            rooms = {r["jid"]: RoomRow(r["jid"], r["unit"], json.loads(r["config"]),
                                       r["subject"], r["subject_nick"])
                     for r in await conn.fetch("select * from xmpp_muc_room" + room_where,
                                               *one)}
            for r in await conn.fetch("select * from xmpp_muc_affiliation" + where, *one):
                if r["room"] in rooms:
                    rooms[r["room"]].affiliations[r["jid"]] = (r["affiliation"], r["managed"])
            for r in await conn.fetch(
                    "select * from (select h.*, row_number() over (partition by room"
                    " order by id desc) as n from xmpp_muc_history h" + hist_where
                    + ") t where n <= $1 order by id", history, *one):
                if r["room"] in rooms:
                    rooms[r["room"]].history.append(
                        (r["stanza_id"], r["nick"], r["sender"], r["stanza"],
                         r["stamp"].timestamp()))
        return list(rooms.values())

    async def save_room(self, row: RoomRow) -> None:
        """Upsert the room and replace its affiliations (rare: admin actions, sync)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """insert into xmpp_muc_room(jid, unit, config, subject, subject_nick)
                   values ($1, $2, $3::jsonb, $4, $5)
                   on conflict (jid) do update set unit = $2, config = $3::jsonb,
                   subject = $4, subject_nick = $5""",
                row.jid, row.unit, json.dumps(row.config), row.subject, row.subject_nick)
            await conn.execute("delete from xmpp_muc_affiliation where room = $1", row.jid)
            await conn.executemany(
                """insert into xmpp_muc_affiliation(room, jid, affiliation, managed)
                   values ($1, $2, $3, $4)""",
                [(row.jid, j, a, m) for j, (a, m) in row.affiliations.items()])

    async def delete_room(self, jid: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("delete from xmpp_muc_room where jid = $1", jid)
            await conn.execute("delete from xmpp_muc_occupant where room = $1", jid)

    async def occupants(self, room: str) -> list[OccupantRow]:
        async with self.pool.acquire() as conn:
            return [OccupantRow(r["room"], r["full_jid"], r["nick"], r["role"], r["node_id"],
                                r["presence"]) for r in await conn.fetch(
                "select * from xmpp_muc_occupant where room = $1 order by nick, full_jid",
                room)]

    async def write_occupants(self, put: list[OccupantRow],
                              gone: list[tuple[str, str]]) -> None:
        """One batch of occupancy changes (many rooms): rows to write, (room, full JID)
        pairs that left."""
        async with self.pool.acquire() as conn, conn.transaction():
            if gone:
                await conn.execute(
                    """delete from xmpp_muc_occupant o using unnest($1::text[], $2::text[])
                       as g(room, full_jid) where o.room = g.room and o.full_jid = g.full_jid""",
                    [g[0] for g in gone], [g[1] for g in gone])
            if put:
                await conn.execute(
                    """insert into xmpp_muc_occupant(room, full_jid, nick, role, node_id,
                       presence) select * from unnest($1::text[], $2::text[], $3::text[],
                       $4::text[], $5::text[], $6::text[])
                       on conflict (room, full_jid) do update set nick = excluded.nick,
                       role = excluded.role, node_id = excluded.node_id,
                       presence = excluded.presence""",
                    [p.room for p in put], [p.full for p in put], [p.nick for p in put],
                    [p.role for p in put], [p.node for p in put], [p.presence for p in put])

    async def add_history(self, rows: list[HistoryRow]) -> None:
        """One batch of messages (many rooms), then each room trimmed to its length."""
        if not rows:
            return
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                """insert into xmpp_muc_history(room, stanza_id, nick, sender, stanza, stamp)
                   select $1, $2, $3, $4, $5, $6 where exists
                   (select 1 from xmpp_muc_room where jid = $1)""",
                [(r.room, r.stanza_id, r.nick, r.sender, r.stanza,
                  datetime.fromtimestamp(r.stamp, UTC)) for r in rows])
            keep = {r.room: r.keep for r in rows}
            await conn.executemany(
                """delete from xmpp_muc_history where room = $1 and id <= coalesce(
                   (select id from xmpp_muc_history where room = $1
                    order by id desc offset $2 limit 1), 0)""",
                list(keep.items()))
