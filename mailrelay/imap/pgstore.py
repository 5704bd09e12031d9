"""The PostgreSQL ``MailStore``: mailboxes, flags, APPEND/COPY/MOVE/EXPUNGE over asyncpg.

Tables (``mailrelay/migrations/0001_mail.sql``): ``mailboxes`` holds UIDVALIDITY,
UIDNEXT and HIGHESTMODSEQ; ``mailbox_messages`` one row per (mailbox, UID) pointing at a
shared ``messages`` row (never mutated); ``mailbox_expunged`` keeps expunged UIDs with
their MODSEQ for QRESYNC; ``mail_usage`` the bytes counted against the quota.

Every writer locks the mailbox row (``update mailboxes ... returning``) before it
allocates UIDs or MODSEQs, so MODSEQs grow in commit order per mailbox (RFC 7162 §3.1.1
needs them strictly increasing), then ``pg_notify('mailbox_changed', ids)`` in the
same transaction: the NOTIFY reaches listeners only after COMMIT.

``user`` is the account's address (what the authenticator returns).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from mailrelay.bodies import all_refs
from mailrelay.gc_repo import collect_bodies

from .keywords import DEFAULT_MAX_KEYWORDS, admit
from .store_api import (
    AppendResult,
    Change,
    CopyResult,
    FlagsChanged,
    KeywordsDefined,
    MailboxInfo,
    MessageAdded,
    MessageExpunged,
    MessageMeta,
    MessageRow,
    MultiAppendResult,
    NewMessage,
    QuotaResource,
    SelectResult,
    StoreError,
    StoreResult,
)

__all__ = ["PgMailStore", "NOTIFY_CHANNEL"]

NOTIFY_CHANNEL = "mailbox_changed"
DELIMITER = "/"
_SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


def _no_such(code: str = "TRYCREATE") -> StoreError:
    # RFC 3501 §6.3.11 / §6.4.7: APPEND and COPY/MOVE say TRYCREATE; elsewhere a missing
    # mailbox is NONEXISTENT (RFC 5530 §3)
    return StoreError("No such mailbox", code)


def _flags(value: Sequence[str] | None) -> frozenset[str]:
    return frozenset(value or ())


def _uid_filter(uids: Sequence[int]) -> tuple[str, tuple[Any, ...]]:
    """``where`` text and arguments ($2...) for ascending unique ``uids``."""
    lo, hi = uids[0], uids[-1]
    if len(uids) > 1 and len(uids) == hi - lo + 1:
        return "mm.uid between $2 and $3", (lo, hi)  # a contiguous run needs no array
    return "mm.uid = any($2::bigint[])", (list(uids),)


def _row_columns(raw: bool, structure: bool, envelope_only: bool) -> str:
    """The select list of a MessageRow (``raw``/``structure`` only when asked; with
    ``envelope_only`` just the stored ENVELOPE of the structure)."""
    cols = "mm.uid, mm.flags, mm.modseq, mm.internaldate, mm.size"
    if structure and envelope_only and not raw:
        cols += (
            ", case when m.structure is null then null"
            " when m.structure ? 'envr' then jsonb_build_object('envr', m.structure->'envr')"
            " else jsonb_build_object('env', m.structure->'env') end"
        )
    else:
        cols += ", m.structure" if structure else ", null"
    return cols + (", m.raw" if raw else ", null")


class PgMailStore:
    """``MailStore`` on an asyncpg pool (see :mod:`mailrelay.imap.store_api`)."""

    def __init__(self, pool: asyncpg.Pool, max_keywords: int = DEFAULT_MAX_KEYWORDS) -> None:
        self.pool = pool
        #: the bound of a mailbox's keyword list (``imap.max_keywords``)
        self.max_keywords = max_keywords
        self._accounts: dict[str, int] = {}

    # -- helpers -----------------------------------------------------------------------
    async def _account(self, conn: Any, user: str) -> int:
        aid = self._accounts.get(user)
        if aid is None:
            aid = await conn.fetchval("select id from accounts where address = $1", user)
            if aid is None:
                raise StoreError("Unknown account", "UNAVAILABLE")
            if len(self._accounts) > 10000:
                self._accounts.clear()
            self._accounts[user] = aid
        return int(aid)

    async def _mailbox(
        self, conn: Any, user: str, name: str, lock: bool = False, missing: str = "NONEXISTENT"
    ) -> Any:
        aid = await self._account(conn, user)
        row = await conn.fetchrow(
            "select id, account_id, uidvalidity, uidnext, highestmodseq, recent_uid, keywords"
            " from mailboxes"
            " where account_id = $1 and name = $2" + (" for update" if lock else ""),
            aid,
            name,
        )
        if row is None:
            raise _no_such(missing)
        return row

    @staticmethod
    async def _notify(conn: Any, *ids: int) -> None:
        await conn.execute(
            "select pg_notify($1, $2)", NOTIFY_CHANNEL, ",".join(str(i) for i in sorted(set(ids)))
        )

    @staticmethod
    async def _bump(conn: Any, mailbox_id: int, uids: int = 0, modseqs: int = 1) -> Any:
        """Lock the mailbox and allocate ``uids`` UIDs and ``modseqs`` MODSEQs.

        Returns (first_uid, first_modseq, uidvalidity, keywords).
        """
        row = await conn.fetchrow(
            "update mailboxes set uidnext = uidnext + $2, highestmodseq = highestmodseq + $3"
            " where id = $1 returning uidnext - $2 as first_uid,"
            " highestmodseq - $3 + 1 as first_modseq, uidvalidity, keywords",
            mailbox_id,
            uids,
            modseqs,
        )
        if row is None:
            raise StoreError("Mailbox was deleted", "NONEXISTENT")
        return row

    async def _check_quota(self, conn: Any, account_id: int, extra: int) -> None:
        row = await conn.fetchrow(
            "select u.bytes, a.quota_bytes from mail_usage u join accounts a on a.id = u.account_id"
            " where u.account_id = $1",
            account_id,
        )
        if row is not None and row["quota_bytes"] and row["bytes"] + extra > row["quota_bytes"]:
            raise StoreError("Quota exceeded", "OVERQUOTA")  # RFC 9208 §4.3 / RFC 5530

    @staticmethod
    async def _usage(conn: Any, account_id: int, nbytes: int, nmsgs: int) -> None:
        await conn.execute(
            "update mail_usage set bytes = greatest(bytes + $2, 0),"
            " messages = greatest(messages + $3, 0) where account_id = $1",
            account_id,
            nbytes,
            nmsgs,
        )

    # -- mailboxes -----------------------------------------------------------------------
    async def list_mailboxes(self, user: str) -> list[MailboxInfo]:
        async with self.pool.acquire() as conn:
            aid = await self._account(conn, user)
            rows = await conn.fetch(
                "select m.id, m.name, m.special_use, s.name is not null as subscribed"
                " from mailboxes m left join imap_subscriptions s"
                " on s.account_id = m.account_id and s.name = m.name"
                " where m.account_id = $1 order by m.name <> 'INBOX', m.name",
                aid,
            )
        return [
            MailboxInfo(
                r["name"],
                frozenset([r["special_use"]] if r["special_use"] else []),
                r["subscribed"],
                r["id"],
            )
            for r in rows
        ]

    async def create_mailbox(self, user: str, name: str, special_use: Iterable[str] = ()) -> None:
        if not name or DELIMITER * 2 in name or name.startswith(DELIMITER):
            raise StoreError("Invalid mailbox name", "CANNOT")
        uses = list(special_use)
        if len(uses) > 1 or any(u not in _SPECIAL_USES for u in uses):
            raise StoreError("Unsupported special-use", "USEATTR")  # RFC 6154 §3
        async with self.pool.acquire() as conn, conn.transaction():
            aid = await self._account(conn, user)
            if await conn.fetchval(
                "select 1 from mailboxes where account_id = $1 and name = $2", aid, name
            ):
                raise StoreError("Mailbox already exists", "ALREADYEXISTS")  # RFC 5530
            # RFC 3501 §6.3.3: create the superior hierarchical names as well
            parts = name.split(DELIMITER)
            parents = [DELIMITER.join(parts[:i]) for i in range(1, len(parts))]
            for p in parents:
                await conn.execute(
                    "insert into mailboxes(account_id, name) values ($1, $2)"
                    " on conflict do nothing",
                    aid,
                    p,
                )
            await conn.execute(
                "insert into mailboxes(account_id, name, special_use) values ($1, $2, $3)",
                aid,
                name,
                uses[0] if uses else None,
            )

    async def delete_mailbox(self, user: str, name: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            box = await self._mailbox(conn, user, name, lock=True)
            aid = box["account_id"]
            if await conn.fetchval(
                "select 1 from mailboxes where account_id = $1 and starts_with(name, $2)",
                aid,
                name + DELIMITER,
            ):
                # RFC 3501 §6.3.4 lets us refuse; RFC 5530 names the reason
                raise StoreError("Mailbox has children, delete them first", "HASCHILDREN")
            usage = await conn.fetchrow(
                "select coalesce(sum(size), 0) as b, count(*) as n from mailbox_messages"
                " where mailbox_id = $1",
                box["id"],
            )
            await conn.execute("delete from mailboxes where id = $1", box["id"])
            await self._usage(conn, aid, -int(usage["b"]), -int(usage["n"]))
            await self._notify(conn, box["id"])

    async def rename_mailbox(self, user: str, old: str, new: str) -> None:
        if not new or new.startswith(DELIMITER) or DELIMITER * 2 in new:
            raise StoreError("Invalid mailbox name", "CANNOT")
        if new == old:
            raise StoreError("Mailbox already exists", "ALREADYEXISTS")
        async with self.pool.acquire() as conn, conn.transaction():
            box = await self._mailbox(conn, user, old, lock=True)
            aid = box["account_id"]
            if new == "INBOX" or await conn.fetchval(
                "select 1 from mailboxes where account_id = $1 and name = $2", aid, new
            ):
                raise StoreError("Mailbox already exists", "ALREADYEXISTS")
            if old.startswith(new + DELIMITER) or new.startswith(old + DELIMITER):
                raise StoreError("Cannot move a mailbox into itself", "CANNOT")
            if old == "INBOX":
                await self._rename_inbox(conn, box, new)
                return
            parts = new.split(DELIMITER)
            for i in range(1, len(parts)):
                await conn.execute(
                    "insert into mailboxes(account_id, name) values ($1, $2)"
                    " on conflict do nothing",
                    aid,
                    DELIMITER.join(parts[:i]),
                )
            # RFC 3501 §6.3.5: inferior names are renamed too
            await conn.execute(
                "update mailboxes set name = $3 || substr(name, length($2) + 1)"
                " where account_id = $1 and (name = $2 or starts_with(name, $2 || '/'))",
                aid,
                old,
                new,
            )

    async def _rename_inbox(self, conn: Any, inbox: Any, new: str) -> None:
        """RFC 3501 §6.3.5: renaming INBOX moves its messages to a new mailbox."""
        dest = await conn.fetchrow(
            "insert into mailboxes(account_id, name, uidnext, highestmodseq, recent_uid)"
            " values ($1, $2, $3, $4, $5) returning id",
            inbox["account_id"],
            new,
            inbox["uidnext"],
            inbox["highestmodseq"] + 1,
            inbox["recent_uid"],
        )
        bump = await self._bump(conn, inbox["id"])
        moved = await conn.fetch(
            "update mailbox_messages set mailbox_id = $2 where mailbox_id = $1 returning uid",
            inbox["id"],
            dest["id"],
        )
        await conn.execute(
            "insert into mailbox_expunged(mailbox_id, uid, modseq)"
            " select $1, u, $3 from unnest($2::bigint[]) u"
            " on conflict (mailbox_id, uid) do update set modseq = excluded.modseq",
            inbox["id"],
            [r["uid"] for r in moved],
            bump["first_modseq"],
        )
        await self._notify(conn, inbox["id"])

    async def subscriptions(self, user: str) -> list[str]:
        async with self.pool.acquire() as conn:
            aid = await self._account(conn, user)
            rows = await conn.fetch(
                "select name from imap_subscriptions where account_id = $1"
                " order by name <> 'INBOX', name",
                aid,
            )
        return [r[0] for r in rows]

    async def set_subscribed(self, user: str, name: str, subscribed: bool) -> None:
        """Subscriptions are names, not mailboxes (RFC 3501 §6.3.6): DELETE keeps them,
        and a name may be subscribed only while its mailbox exists."""
        async with self.pool.acquire() as conn:
            aid = await self._account(conn, user)
            if not subscribed:
                await conn.execute(
                    "delete from imap_subscriptions where account_id = $1 and name = $2",
                    aid,
                    name,
                )
                return
            done = await conn.fetchval(
                "insert into imap_subscriptions(account_id, name)"
                " select account_id, name from mailboxes where account_id = $1 and name = $2"
                " on conflict do nothing returning 1",
                aid,
                name,
            )
            if done is None and not await conn.fetchval(
                "select 1 from mailboxes where account_id = $1 and name = $2", aid, name
            ):
                raise _no_such("NONEXISTENT")

    # -- selecting -----------------------------------------------------------------------
    #: SELECT/EXAMINE in one statement (one snapshot: no explicit transaction): the mailbox
    #: row joined to its messages, one row per message in UID order (one row with uid null
    #: for an empty mailbox). Per-message columns come first (fixed positions), then the
    #: mailbox's (``box``, by name): what else the view needs goes into ``box``.
    #: RFC 3501 §2.3.2: SELECT (not EXAMINE, $3 false) claims \Recent for the messages of
    #: the snapshot nobody has claimed; later arrivals are claimed as they are reported.
    #: ``box`` is materialized (it calls a volatile function): the claim runs once.
    SELECT_SQL = (
        "with box as materialized ("
        " select id, uidvalidity, uidnext, highestmodseq, recent_uid, keywords,"
        "  case when $3 and recent_uid < uidnext then imap_claim_recent(id, uidnext) end"
        "   as claimed"
        " from mailboxes where account_id = $1 and name = $2)"
        " select m.uid, m.flags, m.modseq, box.*"
        " from box left join mailbox_messages m on m.mailbox_id = box.id"
        " order by m.uid"
    )

    async def select(self, user: str, name: str, readonly: bool) -> SelectResult:
        async with self.pool.acquire() as conn:
            aid = await self._account(conn, user)
            rows = await conn.fetch(self.SELECT_SQL, aid, name, not readonly)
        if not rows:
            raise _no_such("NONEXISTENT")
        box = rows[0]
        uidnext = box["uidnext"]
        recent_from = box["recent_uid"]
        if not readonly and recent_from < uidnext:
            first = box["claimed"]
            recent_from = uidnext if first is None else first
        metas = [MessageMeta(r[0], _flags(r[1]), r[2]) for r in rows if r[0] is not None]
        return SelectResult(
            box["id"],
            box["uidvalidity"],
            uidnext,
            box["highestmodseq"],
            metas,
            readonly=readonly,
            recent_from=recent_from,
            keywords=tuple(box["keywords"]),
        )

    async def claim_recent(self, mailbox_id: int, upto: int) -> int | None:
        async with self.pool.acquire() as conn:
            first = await conn.fetchval("select imap_claim_recent($1, $2)", mailbox_id, upto)
        return None if first is None else int(first)

    async def status(self, user: str, name: str, items: Iterable[str]) -> dict[str, int]:
        async with self.pool.acquire() as conn:
            box = await self._mailbox(conn, user, name)
            agg = await conn.fetchrow(
                "select count(*) as messages, coalesce(sum(size), 0) as size,"
                " count(*) filter (where not flags @> array['\\Seen']) as unseen,"
                " count(*) filter (where flags @> array['\\Deleted']) as deleted,"
                " count(*) filter (where uid >= $2) as recent"
                " from mailbox_messages where mailbox_id = $1",
                box["id"],
                box["recent_uid"],
            )
        vals = {
            "MESSAGES": agg["messages"],
            "UIDNEXT": box["uidnext"],
            "UIDVALIDITY": box["uidvalidity"],
            "UNSEEN": agg["unseen"],
            "RECENT": agg["recent"],  # what the next SELECT would claim
            "HIGHESTMODSEQ": box["highestmodseq"],  # RFC 7162 §3.1.6
            "SIZE": int(agg["size"]),  # RFC 8438
            "DELETED": agg["deleted"],  # RFC 9051 §6.3.11
        }
        wanted = set(items)
        return {k: int(v) for k, v in vals.items() if k in wanted}

    # -- messages ------------------------------------------------------------------------
    async def fetch(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        *,
        raw: bool,
        structure: bool,
        envelope_only: bool = False,
    ) -> list[MessageRow]:
        """All rows for ``uids`` in one query (``raw``/``structure`` only when asked)."""
        if not uids:
            return []
        cols = _row_columns(raw, structure, envelope_only)
        join = " join messages m on m.id = mm.message_id" if (raw or structure) else ""
        where, arg = _uid_filter(uids)
        sql = (
            f"select {cols} from mailbox_messages mm{join}"
            f" where mm.mailbox_id = $1 and {where} order by mm.uid"
        )
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(sql, mailbox_id, *arg)
        return [MessageRow(r[0], _flags(r[1]), r[2], r[3], r[4], r[5], r[6]) for r in rows]

    async def fetch_upto(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        max_bytes: int,
        *,
        raw: bool,
        structure: bool,
        envelope_only: bool = False,
    ) -> list[MessageRow]:
        """Like :meth:`fetch`, but only the first rows (by UID) whose sizes add up to at
        most ``max_bytes`` (always at least one): one query, bounded memory."""
        if not uids:
            return []
        cols = _row_columns(raw, structure, envelope_only)
        where, arg = _uid_filter(uids)
        n = len(arg) + 2
        sql = (
            f"select {cols} from (select mm.*, sum(mm.size) over (order by mm.uid) as upto"
            f" from mailbox_messages mm where mm.mailbox_id = $1 and {where}) mm"
            f" join messages m on m.id = mm.message_id"
            f" where mm.upto - mm.size < ${n} and (mm.upto <= ${n} or mm.upto = mm.size)"
            " order by mm.uid"
        )
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(sql, mailbox_id, *arg, max_bytes)
        return [MessageRow(r[0], _flags(r[1]), r[2], r[3], r[4], r[5], r[6]) for r in rows]

    async def headers(
        self, mailbox_id: int, uids: Sequence[int]
    ) -> list[tuple[int, datetime, int, bytes]]:
        """(uid, internaldate, size, header block) per message, for SORT and THREAD:
        only the header bytes leave the database (at most 64 KB of each)."""
        if not uids:
            return []
        where, arg = _uid_filter(uids)
        sql = (
            "select mm.uid, mm.internaldate, mm.size, substring(m.raw from 1 for"
            " least(coalesce((m.structure->'body'->>'bs')::int, length(m.raw)), 65536))"
            " from mailbox_messages mm join messages m on m.id = mm.message_id"
            f" where mm.mailbox_id = $1 and {where} order by mm.uid"
        )
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(sql, mailbox_id, *arg)
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def sizes(self, mailbox_id: int, uids: Sequence[int]) -> list[tuple[int, int]]:
        if not uids:
            return []
        where, arg = _uid_filter(uids)
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"select mm.uid, mm.size from mailbox_messages mm"
                f" where mm.mailbox_id = $1 and {where} order by mm.uid",
                mailbox_id,
                *arg,
            )
        return [(r[0], r[1]) for r in rows]

    async def store_flags(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        mode: str,
        flags: Iterable[str],
        unchangedsince: int | None = None,
    ) -> StoreResult:
        if not uids:
            return StoreResult([], [], 0)
        async with self.pool.acquire() as conn, conn.transaction():
            # lock the mailbox first: MODSEQs are allocated in commit order
            box = await conn.fetchrow(
                "select highestmodseq, keywords from mailboxes where id = $1 for update",
                mailbox_id,
            )
            if box is None:
                raise StoreError("Mailbox was deleted", "NONEXISTENT")
            hms = box["highestmodseq"]
            named = [f for f in flags if f != "\\Recent"]
            if mode == "-":
                # removing a keyword the mailbox does not know changes nothing
                given = frozenset(admit(named, box["keywords"], None)[0])
            else:
                # RFC 3501 §6.4.6 / RFC 5530 §3: a new keyword beyond the bound is refused
                # (NO [LIMIT], nothing changed); the list itself grows by trigger (0022)
                given = frozenset(admit(named, box["keywords"], self.max_keywords)[0])
            rows = await conn.fetch(
                "select uid, flags, modseq from mailbox_messages"
                " where mailbox_id = $1 and uid = any($2::bigint[]) order by uid",
                mailbox_id,
                list(uids),
            )
            updated: list[MessageMeta] = []
            modified: list[int] = []
            changes: list[tuple[int, frozenset[str]]] = []
            for uid, old_flags, modseq in rows:
                old = _flags(old_flags)
                if unchangedsince is not None and modseq > unchangedsince:
                    modified.append(uid)  # RFC 7162 §3.1.3: MODIFIED response code
                    continue
                new = old | given if mode == "+" else old - given if mode == "-" else given
                if new == old:
                    updated.append(MessageMeta(uid, old, modseq))
                else:
                    changes.append((uid, new))
            if changes:
                modseq = hms + 1  # one MODSEQ for the whole command (RFC 7162 §3.1.3 allows)
                await conn.execute(
                    "update mailboxes set highestmodseq = $2 where id = $1", mailbox_id, modseq
                )
                await conn.execute(
                    "update mailbox_messages mm set flags = string_to_array(t.f, ' '),"
                    " modseq = $4 from unnest($2::bigint[], $3::text[]) as t(uid, f)"
                    " where mm.mailbox_id = $1 and mm.uid = t.uid",
                    mailbox_id,
                    [u for u, _ in changes],
                    [" ".join(sorted(f)) for _, f in changes],
                    modseq,
                )
                updated += [MessageMeta(u, f, modseq) for u, f in changes]
                hms = modseq
                await self._notify(conn, mailbox_id)
        updated.sort(key=lambda m: m.uid)
        return StoreResult(updated, modified, hms)

    async def append(
        self,
        user: str,
        name: str,
        message: bytes,
        flags: Iterable[str],
        internaldate: datetime,
        structure: dict[str, Any],
    ) -> AppendResult:
        async with self.pool.acquire() as conn, conn.transaction():
            box = await self._mailbox(conn, user, name, missing="TRYCREATE")
            aid = box["account_id"]
            await self._check_quota(conn, aid, len(message))
            mid = await conn.fetchval(
                "insert into messages(raw, size, structure) values ($1, $2, $3) returning id",
                message,
                len(message),
                structure,
            )
            b = await self._bump(conn, box["id"], uids=1)
            kept, _ = admit(flags, b["keywords"], self.max_keywords)
            await conn.execute(
                "insert into mailbox_messages(mailbox_id, uid, message_id, flags, modseq,"
                " internaldate, size) values ($1, $2, $3, $4, $5, $6, $7)",
                box["id"],
                b["first_uid"],
                mid,
                sorted(kept),
                b["first_modseq"],
                internaldate,
                len(message),
            )
            await self._usage(conn, aid, len(message), 1)
            await self._notify(conn, box["id"])
        return AppendResult(b["uidvalidity"], b["first_uid"])

    async def append_many(
        self, user: str, name: str, messages: Sequence[NewMessage]
    ) -> MultiAppendResult:
        """MULTIAPPEND (RFC 3502): one transaction, one MODSEQ, consecutive UIDs."""
        async with self.pool.acquire() as conn, conn.transaction():
            box = await self._mailbox(conn, user, name)
            aid = box["account_id"]
            total = sum(len(m.raw) for m in messages)
            await self._check_quota(conn, aid, total)
            b = await self._bump(conn, box["id"], uids=len(messages))
            known = list(b["keywords"])
            kept_flags: list[tuple[str, ...]] = []
            for m in messages:  # the bound counts the keywords of all of them
                kept, fresh = admit(m.flags, known, self.max_keywords)
                known += fresh
                kept_flags.append(kept)
            uids = []
            for i, m in enumerate(messages):
                mid = await conn.fetchval(
                    "insert into messages(raw, size, structure) values ($1, $2, $3)"
                    " returning id",
                    m.raw,
                    len(m.raw),
                    m.structure,
                )
                uid = b["first_uid"] + i
                await conn.execute(
                    "insert into mailbox_messages(mailbox_id, uid, message_id, flags, modseq,"
                    " internaldate, size) values ($1, $2, $3, $4, $5, $6, $7)",
                    box["id"],
                    uid,
                    mid,
                    sorted(kept_flags[i]),
                    b["first_modseq"],
                    m.internaldate,
                    len(m.raw),
                )
                uids.append(uid)
            await self._usage(conn, aid, total, len(messages))
            await self._notify(conn, box["id"])
        return MultiAppendResult(b["uidvalidity"], uids)

    async def _copy(
        self, conn: Any, mailbox_id: int, uids: Sequence[int], user: str, dest: str
    ) -> tuple[CopyResult, Any, list[Any]]:
        dst = await self._mailbox(conn, user, dest, missing="TRYCREATE")
        src_account = await conn.fetchval(
            "select account_id from mailboxes where id = $1", mailbox_id
        )
        if src_account != dst["account_id"]:
            raise _no_such()
        rows = await conn.fetch(
            "select uid, message_id, flags, internaldate, size from mailbox_messages"
            " where mailbox_id = $1 and uid = any($2::bigint[]) order by uid",
            mailbox_id,
            list(uids),
        )
        if not rows:
            return CopyResult(dst["uidvalidity"], [], []), dst, rows
        total = sum(r["size"] for r in rows)
        await self._check_quota(conn, dst["account_id"], total)
        n = len(rows)
        b = await self._bump(conn, dst["id"], uids=n, modseqs=1)
        # the copies keep their flags (RFC 3501 §6.4.7); keywords new to the destination
        # count against its bound like a STORE's
        admit({f for r in rows for f in r["flags"]}, b["keywords"], self.max_keywords)
        first = b["first_uid"]
        await conn.execute(
            "insert into mailbox_messages(mailbox_id, uid, message_id, flags, modseq,"
            " internaldate, size)"
            " select $1, $2 + o - 1, mm.message_id, mm.flags, $4, mm.internaldate, mm.size"
            " from unnest($3::bigint[]) with ordinality as t(uid, o)"
            " join mailbox_messages mm on mm.mailbox_id = $5 and mm.uid = t.uid",
            dst["id"],
            first,
            [r["uid"] for r in rows],
            b["first_modseq"],
            mailbox_id,
        )
        await self._usage(conn, dst["account_id"], total, n)
        res = CopyResult(b["uidvalidity"], [r["uid"] for r in rows], list(range(first, first + n)))
        return res, dst, rows

    async def copy(self, mailbox_id: int, uids: Sequence[int], user: str, dest: str) -> CopyResult:
        async with self.pool.acquire() as conn, conn.transaction():
            res, dst, _ = await self._copy(conn, mailbox_id, uids, user, dest)
            if res.dest_uids:
                await self._notify(conn, dst["id"])
        return res

    async def move(self, mailbox_id: int, uids: Sequence[int], user: str, dest: str) -> CopyResult:
        async with self.pool.acquire() as conn, conn.transaction():
            # lock both mailboxes in id order: two opposite MOVEs must not deadlock
            aid = await self._account(conn, user)
            await conn.execute(
                "select 1 from mailboxes where id = $1 or (account_id = $2 and name = $3)"
                " order by id for update",
                mailbox_id,
                aid,
                dest,
            )
            res, dst, rows = await self._copy(conn, mailbox_id, uids, user, dest)
            if res.source_uids:
                await self._remove(
                    conn,
                    mailbox_id,
                    res.source_uids,
                    dst["account_id"],
                    sum(r["size"] for r in rows),
                )
                await self._notify(conn, mailbox_id, dst["id"])
        return res

    async def _remove(
        self, conn: Any, mailbox_id: int, uids: Sequence[int], account_id: int, nbytes: int
    ) -> None:
        b = await self._bump(conn, mailbox_id)
        await conn.execute(
            "delete from mailbox_messages where mailbox_id = $1 and uid = any($2::bigint[])",
            mailbox_id,
            list(uids),
        )
        await conn.execute(
            "insert into mailbox_expunged(mailbox_id, uid, modseq)"
            " select $1, u, $3 from unnest($2::bigint[]) u"
            " on conflict (mailbox_id, uid) do update set modseq = excluded.modseq",
            mailbox_id,
            list(uids),
            b["first_modseq"],
        )
        await self._usage(conn, account_id, -nbytes, -len(uids))

    async def expunge(self, mailbox_id: int, uids: Sequence[int] | None = None) -> list[int]:
        async with self.pool.acquire() as conn, conn.transaction():
            aid = await conn.fetchval(
                "select account_id from mailboxes where id = $1 for update", mailbox_id
            )
            if aid is None:
                raise StoreError("Mailbox was deleted", "NONEXISTENT")
            sql = (
                "select uid, size from mailbox_messages where mailbox_id = $1"
                " and flags @> array['\\Deleted']"
            )
            args: list[Any] = [mailbox_id]
            if uids is not None:
                sql += " and uid = any($2::bigint[])"
                args.append(list(uids))
            rows = await conn.fetch(sql + " order by uid", *args)
            if not rows:
                return []
            gone = [r["uid"] for r in rows]
            await self._remove(conn, mailbox_id, gone, aid, sum(r["size"] for r in rows))
            await self._notify(conn, mailbox_id)
        return gone

    async def changes_since(self, mailbox_id: int, modseq: int) -> list[Change]:
        """Every change after ``modseq``, one event per row, in MODSEQ order.

        A row that entered the mailbox after ``modseq`` is a :class:`MessageAdded`, any
        other changed row a :class:`FlagsChanged` (never both); expunged rows are
        :class:`MessageExpunged`; a keyword list that grew is a :class:`KeywordsDefined`
        (sorted first among the changes of its MODSEQ). One statement, so one snapshot: MODSEQs commit in
        order per mailbox, so the list is complete up to its highest MODSEQ.
        """
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "select uid, flags, modseq, added_modseq > $2, false from mailbox_messages"
                " where mailbox_id = $1 and modseq > $2"
                " union all select uid, null, modseq, false, true from mailbox_expunged"
                " where mailbox_id = $1 and modseq > $2"
                " union all select 0, keywords, keywords_modseq, false, null from mailboxes"
                " where id = $1 and keywords_modseq > $2",
                mailbox_id,
                modseq,
            )
        out: list[Change] = []
        for uid, flags, ms, added, gone in sorted(rows, key=lambda r: (r[2], r[0])):
            if gone is None:  # the keyword list grew (0022), whole list
                out.append(KeywordsDefined(tuple(flags), ms))
            elif gone:
                out.append(MessageExpunged(uid, ms))
            elif added:
                out.append(MessageAdded(uid, _flags(flags), ms))
            else:
                out.append(FlagsChanged(uid, _flags(flags), ms))
        return out

    async def expunged_since(self, mailbox_id: int, modseq: int) -> list[int]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "select uid from mailbox_expunged where mailbox_id = $1 and modseq > $2"
                " order by uid",
                mailbox_id,
                modseq,
            )
        return [r[0] for r in rows]

    async def collect_garbage(self, limit: int = 1000) -> int:
        """Delete up to ``limit`` message bodies whose last mailbox entry went away and
        that nothing else references; return how many went.

        The periodic sweep is `gateway.maintenance`; this runs one round on demand.
        Still referenced means a table declared in `mailrelay.bodies` (mailbox entry,
        queue row, delivery log, document) points at it.
        """
        async with self.pool.acquire() as conn:
            return await collect_bodies(conn, all_refs(), limit)

    async def quota(self, user: str, root: str) -> list[QuotaResource]:
        if root != "":
            raise StoreError("No such quota root", "NONEXISTENT")  # RFC 9208 §4.2
        async with self.pool.acquire() as conn:
            aid = await self._account(conn, user)
            row = await conn.fetchrow(
                "select coalesce(u.bytes, 0) as bytes, a.quota_bytes from accounts a"
                " left join mail_usage u on u.account_id = a.id where a.id = $1",
                aid,
            )
        # RFC 9208 §5.1: STORAGE is counted in units of 1024 octets
        return [
            QuotaResource(
                "STORAGE", (int(row["bytes"]) + 1023) // 1024, int(row["quota_bytes"]) // 1024
            )
        ]


_GC_SQL = """
with c as (
    select message_id from message_gc order by message_id limit $1 for update skip locked
), dead as (
    select c.message_id as id from c
    where not exists (select 1 from mailbox_messages x where x.message_id = c.message_id)
      and not exists (select 1 from queue x where x.message_id = c.message_id)
      and not exists (select 1 from deliveries x where x.message_id = c.message_id)
      and not exists (select 1 from documents x where x.message_id = c.message_id)
      and not exists (select 1 from document_recipients x
                      where x.delivered_message_id = c.message_id
                         or x.receipt_message_id = c.message_id)
      and not exists (select 1 from document_events x where x.message_id = c.message_id)
), gone as (
    delete from messages m using dead where m.id = dead.id returning m.id
), done as (
    delete from message_gc g using c where g.message_id = c.message_id
)
select count(*) from gone
"""

_SPECIAL_USES = frozenset(
    {"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"}
)
