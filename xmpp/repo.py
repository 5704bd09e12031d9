"""XMPP persistence: the only module of `xmpp` that speaks SQL (asyncpg).

Nothing here is on the message hot path: rosters are read at login and on presence
changes, offline messages when nobody is online, the rest on explicit requests.
JIDs are normalised bare JID strings.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from .changes import CHANNEL as CHANGES_CHANNEL

log = logging.getLogger("cxgw.xmpp.repo")


@dataclass(frozen=True)
class RosterRow:
    """A personal roster item (RFC 6121 §2.1.2)."""

    contact: str
    name: str = ""
    subscription: str = "none"  # none | to | from | both
    ask: bool = False           # an outbound subscribe is pending
    groups: tuple[str, ...] = ()


def _row(r: asyncpg.Record) -> RosterRow:
    return RosterRow(r["contact"], r["name"], r["subscription"], r["ask"], tuple(r["groups"]))


async def notify_changes(conn: asyncpg.Connection, notices: Iterable[str]) -> None:
    """Queue feature-cache notices (``xmpp.changes``) on the transaction of `conn`:
    PostgreSQL sends them at COMMIT, so other nodes hear only what is committed."""
    for n in notices:
        await conn.execute("select pg_notify($1, $2)", CHANGES_CHANNEL, n)


class XmppStore:
    """Typed access to the xmpp_* tables."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # -- roster (RFC 6121 §2) ------------------------------------------------------------

    async def roster(self, owner: str) -> tuple[int, list[RosterRow]]:
        async with self.pool.acquire() as conn:
            ver = await conn.fetchval(
                "select version from xmpp_roster_version where owner = $1", owner) or 0
            rows = await conn.fetch(
                "select * from xmpp_roster where owner = $1 order by contact", owner)
        return ver, [_row(r) for r in rows]

    async def roster_item(self, owner: str, contact: str) -> RosterRow | None:
        async with self.pool.acquire() as conn:
            r = await conn.fetchrow(
                "select * from xmpp_roster where owner = $1 and contact = $2", owner, contact)
        return _row(r) if r else None

    async def put_item(self, owner: str, item: RosterRow, notices: Sequence[str] = ()) -> int:
        """Insert or replace an item; returns the new roster version."""
        async with self.pool.acquire() as conn, conn.transaction():
            await notify_changes(conn, notices)
            await conn.execute(
                """insert into xmpp_roster(owner, contact, name, subscription, ask, groups)
                   values ($1, $2, $3, $4, $5, $6)
                   on conflict (owner, contact) do update set name = $3, subscription = $4,
                   ask = $5, groups = $6""",
                owner, item.contact, item.name, item.subscription, item.ask, list(item.groups))
            return await self._bump(conn, owner)

    async def delete_item(self, owner: str, contact: str,
                          notices: Sequence[str] = ()) -> int | None:
        """Remove an item; the new version, or None if there was no such item."""
        async with self.pool.acquire() as conn, conn.transaction():
            done = await conn.execute(
                "delete from xmpp_roster where owner = $1 and contact = $2", owner, contact)
            if done.endswith(" 0"):
                return None
            await notify_changes(conn, notices)
            return await self._bump(conn, owner)

    async def _bump(self, conn: asyncpg.Connection, owner: str) -> int:
        return int(await conn.fetchval(
            """insert into xmpp_roster_version(owner, version) values ($1, 1)
               on conflict (owner) do update set version = xmpp_roster_version.version + 1
               returning version""", owner))

    async def subscribers(self, owner: str) -> list[str]:
        """Contacts with a subscription to `owner`'s presence ('from' or 'both')."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "select contact from xmpp_roster where owner = $1 and subscription in ('from','both')",
                owner)
        return [r["contact"] for r in rows]

    # -- pending inbound subscription requests (RFC 6121 §3.1.3) ---------------------------

    async def sub_requests(self, owner: str) -> list[tuple[str, str]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "select contact, status from xmpp_sub_request where owner = $1 order by created_at",
                owner)
        return [(r["contact"], r["status"]) for r in rows]

    async def add_sub_request(self, owner: str, contact: str, status: str = "") -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                """insert into xmpp_sub_request(owner, contact, status) values ($1, $2, $3)
                   on conflict (owner, contact) do update set status = $3""",
                owner, contact, status)

    async def drop_sub_request(self, owner: str, contact: str) -> bool:
        async with self.pool.acquire() as conn:
            done = await conn.execute(
                "delete from xmpp_sub_request where owner = $1 and contact = $2", owner, contact)
        return not done.endswith(" 0")

    # -- offline messages (XEP-0160) ---------------------------------------------------------

    async def store_offline(self, owner: str, stanza: str, limit: int) -> bool:
        """Keep a message for later; False when `owner` already has `limit` of them."""
        async with self.pool.acquire() as conn, conn.transaction():
            # One writer per owner at a time, so the cap holds under concurrency.
            await conn.execute("select pg_advisory_xact_lock(hashtext($1))", owner)
            count = await conn.fetchval(
                "select count(*) from xmpp_offline where owner = $1", owner)
            if count >= limit:
                return False
            await conn.execute(
                "insert into xmpp_offline(owner, stanza) values ($1, $2)", owner, stanza)
        return True

    async def take_offline(self, owner: str) -> list[tuple[str, datetime]]:
        """Remove and return the stored messages of `owner`, oldest first."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """delete from xmpp_offline where owner = $1 returning id, stanza, stamp""", owner)
        return [(r["stanza"], r["stamp"]) for r in sorted(rows, key=lambda r: r["id"])]

    async def count_offline(self, owner: str) -> int:
        async with self.pool.acquire() as conn:
            return int(await conn.fetchval(
                "select count(*) from xmpp_offline where owner = $1", owner))

    # -- private XML storage (XEP-0049) -------------------------------------------------------

    async def get_private(self, owner: str, namespace: str) -> str | None:
        async with self.pool.acquire() as conn:
            value = await conn.fetchval(
                "select xml from xmpp_private where owner = $1 and namespace = $2",
                owner, namespace)
        return str(value) if value is not None else None

    async def set_private(self, owner: str, namespace: str, xml: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                """insert into xmpp_private(owner, namespace, xml) values ($1, $2, $3)
                   on conflict (owner, namespace) do update set xml = $3""",
                owner, namespace, xml)

    # -- blocking (XEP-0191) ----------------------------------------------------------------

    async def all_blocklists(self) -> dict[str, set[str]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch("select owner, jid from xmpp_blocklist")
        out: dict[str, set[str]] = {}
        for r in rows:
            out.setdefault(r["owner"], set()).add(r["jid"])
        return out

    async def block(self, owner: str, jids: Iterable[str], notices: Sequence[str] = ()) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await notify_changes(conn, notices)
            await conn.executemany(
                "insert into xmpp_blocklist(owner, jid) values ($1, $2) on conflict do nothing",
                [(owner, j) for j in jids])

    async def unblock(self, owner: str, jids: Iterable[str] | None,
                      notices: Sequence[str] = ()) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await notify_changes(conn, notices)
            if jids is None:
                await conn.execute("delete from xmpp_blocklist where owner = $1", owner)
            else:
                await conn.execute("delete from xmpp_blocklist where owner = $1 and jid = any($2)",
                                   owner, list(jids))

    # -- last activity (XEP-0012) -------------------------------------------------------------

    async def last_seen(self, owner: str) -> tuple[datetime, str] | None:
        async with self.pool.acquire() as conn:
            r = await conn.fetchrow("select seen, status from xmpp_last where owner = $1", owner)
        return (r["seen"], r["status"]) if r else None

    async def set_last_seen(self, owner: str, seen: datetime, status: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                """insert into xmpp_last(owner, seen, status) values ($1, $2, $3)
                   on conflict (owner) do update set seen = $2, status = $3""",
                owner, seen, status)

    # -- avatars (XEP-0153) ---------------------------------------------------------------------

    async def avatar(self, owner: str) -> tuple[str, bytes, str] | None:
        async with self.pool.acquire() as conn:
            r = await conn.fetchrow(
                "select mime_type, data, sha1 from xmpp_avatar where owner = $1", owner)
        return (r["mime_type"], bytes(r["data"]), r["sha1"]) if r else None

    async def set_avatar(self, owner: str, mime_type: str, data: bytes, sha1: str) -> None:
        async with self.pool.acquire() as conn:
            if not data:
                await conn.execute("delete from xmpp_avatar where owner = $1", owner)
                return
            await conn.execute(
                """insert into xmpp_avatar(owner, mime_type, data, sha1) values ($1, $2, $3, $4)
                   on conflict (owner) do update set mime_type = $2, data = $3, sha1 = $4,
                   updated_at = now()""", owner, mime_type, data, sha1)
