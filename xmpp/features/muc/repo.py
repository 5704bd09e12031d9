"""MUC persistence (the package's only SQL): rooms with config and subject, affiliations,
recent history. Read once at start; written behind the hot path (``writer``)."""

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


class MucStoreLike(Protocol):
    async def load(self, history: int) -> list[RoomRow]: ...
    async def save_room(self, row: RoomRow) -> None: ...
    async def delete_room(self, jid: str) -> None: ...
    async def add_history(self, rows: list[HistoryRow]) -> None: ...


class MucStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def load(self, history: int) -> list[RoomRow]:
        async with self.pool.acquire() as conn:
            rooms = {r["jid"]: RoomRow(r["jid"], r["unit"], json.loads(r["config"]),
                                       r["subject"], r["subject_nick"])
                     for r in await conn.fetch("select * from xmpp_muc_room")}
            for r in await conn.fetch("select * from xmpp_muc_affiliation"):
                if r["room"] in rooms:
                    rooms[r["room"]].affiliations[r["jid"]] = (r["affiliation"], r["managed"])
            for r in await conn.fetch(
                    """select * from (select h.*, row_number() over
                         (partition by room order by id desc) as n from xmpp_muc_history h) t
                       where n <= $1 order by id""", history):
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
        async with self.pool.acquire() as conn:
            await conn.execute("delete from xmpp_muc_room where jid = $1", jid)

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

