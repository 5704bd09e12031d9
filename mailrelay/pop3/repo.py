"""POP3's reads of the mail store: the INBOX snapshot and one message's bytes.

Deletions are not here: they are IMAP expunges through the IMAP store (``\\Deleted`` then
``EXPUNGE`` of exactly those UIDs), so MODSEQ, QRESYNC's expunge record, quota usage and
the IDLE notification are the IMAP store's, done once.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class Snapshot:
    mailbox_id: int
    uidvalidity: int
    messages: list[tuple[int, int]]  # (uid, size), UID order


async def inbox_snapshot(pool: asyncpg.Pool, address: str) -> Snapshot | None:
    """The INBOX of `address` as one consistent read (None: no account or no INBOX)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                        readonly=True):
        box = await conn.fetchrow(
            "select b.id, b.uidvalidity from mailboxes b join accounts a on a.id = b.account_id"
            " where a.address = $1 and b.name = 'INBOX'", address)
        if box is None:
            return None
        rows = await conn.fetch(
            "select uid, size from mailbox_messages where mailbox_id = $1 order by uid",
            box["id"])
    return Snapshot(int(box["id"]), int(box["uidvalidity"]),
                    [(int(r["uid"]), int(r["size"])) for r in rows])


async def message_bytes(pool: asyncpg.Pool, mailbox_id: int, uid: int) -> bytes | None:
    """The stored message (None when another session expunged it meanwhile)."""
    async with pool.acquire() as conn:
        raw = await conn.fetchval(
            "select m.raw from mailbox_messages mm join messages m on m.id = mm.message_id"
            " where mm.mailbox_id = $1 and mm.uid = $2", mailbox_id, uid)
    return None if raw is None else bytes(raw)
