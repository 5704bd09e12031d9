"""Queue and mail-store persistence: the only SQL of the mail pipeline.

Everything a stage writes for one batch happens in one transaction: messages and queue rows
at submission (group commit), mailbox entries plus queue removal plus delivery records at
local delivery. Claims use `FOR UPDATE SKIP LOCKED` with a lease so several processes can
share the queue and a crashed process's claims come back when the lease expires.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from mailrelay.sieve import repo as sieve_repo

# A connection or a pool's proxy of one (duck-typed alike).
Conn: TypeAlias = Any

QUEUE_COLUMNS = ("queue_id", "message_id", "sender", "recipient", "orig_rcpt", "domain",
                 "transport", "envid", "notify", "ret")


@dataclass(frozen=True)
class NewMessage:
    raw: bytes
    structure: dict[str, Any] | None
    rows: Sequence[tuple[Any, ...]]  # QUEUE_COLUMNS without queue_id and message_id


@dataclass(frozen=True)
class QueueRow:
    id: int
    queue_id: str
    message_id: int
    sender: str
    recipient: str
    orig_rcpt: str | None
    domain: str
    transport: str
    state: str
    attempts: int
    next_attempt: datetime
    last_error: str | None
    created_at: datetime
    size: int
    delay_notified: bool
    envid: str | None
    notify: str | None
    ret: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "queue_id": self.queue_id, "sender": self.sender,
                "recipient": self.recipient, "transport": self.transport,
                "domain": self.domain, "state": self.state, "attempts": self.attempts,
                "next_attempt": self.next_attempt.isoformat(), "last_error": self.last_error,
                "created_at": self.created_at.isoformat(), "size": self.size}


ROW_SELECT = """
select q.id, q.queue_id, q.message_id, q.sender, q.recipient, q.orig_rcpt, q.domain,
       q.transport, q.state, q.attempts, q.next_attempt, q.last_error, q.created_at, m.size,
       q.delay_notified, q.envid, q.notify, q.ret
from queue q join messages m on m.id = q.message_id"""


def _row(r: asyncpg.Record) -> QueueRow:
    return QueueRow(*r.values())


async def enqueue(conn: Conn, queue_ids: Sequence[str], messages: Sequence[NewMessage],
                  *, local_inline: bool = True) -> tuple[list[int], list[tuple[str, str]]]:
    """Write messages and their queue rows (the caller holds the transaction).

    With `local_inline`, recipients with a local mailbox are delivered in this same
    transaction (the local stage run at once, as mox does): their INBOX entries commit
    together with the message, so there is nothing to claim, deliver and finish later.
    Rows that cannot be delivered inline (no active mailbox) are queued as usual.
    Returns (message ids, [(queue_id, recipient)] delivered inline).
    """
    ids = [r[0] for r in await conn.fetch(
        "select nextval('messages_id_seq') from generate_series(1, $1)", len(messages))]
    await conn.copy_records_to_table(
        "messages", columns=("id", "raw", "size", "structure"),
        records=[(mid, m.raw, len(m.raw), m.structure)
                 for mid, m in zip(ids, messages, strict=True)])
    records = [(qid, mid, *row) for qid, mid, m in zip(queue_ids, ids, messages, strict=True)
               for row in m.rows]
    inline: list[tuple[str, str]] = []
    if local_inline:
        # QUEUE_COLUMNS: queue_id, message_id, sender, recipient, orig_rcpt, domain, transport...
        sizes = {mid: len(m.raw) for mid, m in zip(ids, messages, strict=True)}
        local = [(i, r) for i, r in enumerate(records) if r[6] == "local"]
        if local:  # Sieve (issue 16): recipients with an active script wait in the queue for
            # the scheduler, which runs their script; one indexed query per batch.
            held = await sieve_repo.with_active_script(conn, list({r[3] for _, r in local}))
            local = [(i, r) for i, r in local if r[3] not in held]
        done = await deliver_local(conn, [(i, r[1], r[3], sizes[r[1]]) for i, r in local])
        if done:
            delivered = [records[i] for i in sorted(done)]
            await conn.copy_records_to_table(
                "deliveries", columns=("queue_id", "message_id", "sender", "recipient", "status",
                                       "detail", "attempts"),
                records=[(r[0], r[1], r[2], r[4] or r[3], "delivered", "local INBOX", 1)
                         for r in delivered])
            inline = [(r[0], r[3]) for r in delivered]
            records = [r for i, r in enumerate(records) if i not in done]
    if records:
        await conn.copy_records_to_table("queue", columns=QUEUE_COLUMNS, records=records)
        await conn.execute("select pg_notify('queue_ready', '')")
    return ids, inline


async def claim(conn: Conn, owner: str, limit: int, lease_seconds: int,
                transports: Sequence[str] | None = None) -> list[QueueRow]:
    """Claim up to `limit` due rows for this process (SKIP LOCKED + lease)."""
    rows = await conn.fetch(
        "with c as (select id from queue where state = 'ready' and next_attempt <= now()"
        "  and ($4::text[] is null or transport = any($4::text[]))"
        "  order by next_attempt, id limit $2 for update skip locked)"
        " update queue q set state = 'active', lease_owner = $1,"
        "  lease_until = now() + make_interval(secs => $3), attempts = q.attempts + 1"
        " from c where q.id = c.id returning q.id", owner, limit, float(lease_seconds),
        list(transports) if transports else None)
    if not rows:
        return []
    got = await conn.fetch(ROW_SELECT + " where q.id = any($1::bigint[]) order by q.id",
                           [r["id"] for r in rows])
    return [_row(r) for r in got]


async def reclaim_expired(conn: Conn) -> int:
    """Return rows whose lease ran out (their process died) to the ready state."""
    res = await conn.execute("update queue set state = 'ready', lease_owner = null,"
                             " lease_until = null where state = 'active' and lease_until < now()")
    return int(res.split()[-1])


async def active_owners(conn: Conn) -> list[str]:
    return [r["lease_owner"] for r in await conn.fetch(
        "select distinct lease_owner from queue where state = 'active' and lease_owner is not null")]


async def release_owner(conn: Conn, owner: str) -> None:
    """On clean shutdown, hand back rows this process still holds (attempt not counted)."""
    await conn.execute("update queue set state = 'ready', lease_owner = null, lease_until = null,"
                       " attempts = greatest(attempts - 1, 0) where state = 'active' and lease_owner = $1", owner)


async def expire_history(conn: Conn, days: int) -> int:
    """Forget delivery records older than `days`; their bodies become candidates for the
    garbage collector (`message_gc`), which keeps whatever a mailbox still references."""
    n = await conn.fetchval(
        "with d as (delete from deliveries where at < now() - make_interval(days => $1)"
        " returning message_id), c as (insert into message_gc(message_id)"
        " select distinct message_id from d on conflict do nothing)"
        " select count(*) from d", days)
    return int(n or 0)


async def next_due(conn: Conn) -> datetime | None:
    return await conn.fetchval("select min(next_attempt) from queue where state = 'ready'")


async def message_raw(conn: Conn, message_id: int) -> bytes:
    """The stored message; b"" if it is gone (collected after its last reference)."""
    raw = await conn.fetchval("select raw from messages where id = $1", message_id)
    return bytes(raw) if raw is not None else b""


async def finish(conn: Conn, rows: Sequence[QueueRow], status: str, details: Sequence[str]) -> None:
    """Remove rows from the queue and record their outcome (delivered / bounced / deleted)."""
    if not rows:
        return
    await conn.execute("delete from queue where id = any($1::bigint[])", [r.id for r in rows])
    await conn.copy_records_to_table(
        "deliveries", columns=("queue_id", "message_id", "sender", "recipient", "status", "detail", "attempts"),
        records=[(r.queue_id, r.message_id, r.sender, r.orig_rcpt or r.recipient, status, d,
                  r.attempts) for r, d in zip(rows, details, strict=True)])


async def defer(conn: Conn, row: QueueRow, delay_seconds: float, error: str) -> None:
    await conn.execute("update queue set state = 'ready', lease_owner = null, lease_until = null,"
                       " next_attempt = now() + make_interval(secs => $2), last_error = $3"
                       " where id = $1", row.id, float(delay_seconds), error)


async def mark_delay_notified(conn: Conn, ids: Sequence[int]) -> None:
    await conn.execute("update queue set delay_notified = true where id = any($1::bigint[])", list(ids))


# Sieve (issue 16): an item may name its target mailbox ($5, null = INBOX) and IMAP flags
# ($6, space-separated, null = none); plain items pass nulls and take the INBOX path as before.
LOCAL_DELIVER = """
with r as (
    select * from unnest($1::bigint[], $2::bigint[], $3::text[], $4::int[], $5::text[], $6::text[])
        as t(k, mid, rcpt, size, box, flags)
), mb as (
    select m.id, m.name, a.address, a.id as account_id from mailboxes m join accounts a on a.id = m.account_id
    where (a.address, m.name) in (select rcpt, coalesce(box, 'INBOX') from r) and a.status = 'active'
    order by m.id for update of m
), numbered as (
    select r.k, r.mid, r.size, r.flags, mb.id as mailbox_id, mb.account_id,
           row_number() over (partition by mb.id order by r.k) as n,
           count(*) over (partition by mb.id) as cnt
    from r join mb on mb.address = r.rcpt and mb.name = coalesce(r.box, 'INBOX')
), bump as (
    update mailboxes m set uidnext = m.uidnext + x.cnt, highestmodseq = m.highestmodseq + x.cnt
    from (select distinct mailbox_id, cnt from numbered) x where m.id = x.mailbox_id
    returning m.id, m.uidnext - x.cnt as first_uid, m.highestmodseq - x.cnt as first_modseq
), ins as (
    insert into mailbox_messages(mailbox_id, uid, message_id, modseq, size, internaldate, flags)
    select n.mailbox_id, b.first_uid + n.n - 1, n.mid, b.first_modseq + n.n, n.size, now(),
           coalesce(string_to_array(n.flags, ' '), '{}')
    from numbered n join bump b on b.id = n.mailbox_id
    returning mailbox_id
), usage as (
    update mail_usage u set bytes = u.bytes + s.bytes, messages = u.messages + s.n
    from (select account_id, sum(size) as bytes, count(*) as n from numbered group by account_id) s
    where u.account_id = s.account_id
)
select n.k, n.mailbox_id from numbered n
"""


async def deliver_local(conn: Conn, items: Sequence[tuple[Any, ...]]) -> dict[int, int]:
    """Put messages into INBOXes: items are (key, message_id, account address, size), or
    with Sieve (key, message_id, address, size, mailbox or None, flags) to file a message
    into another existing mailbox with IMAP flags.

    Returns key -> mailbox id for the items delivered; missing keys had no active account
    (or, for a named mailbox, no such mailbox: the caller falls back to INBOX).
    Notifies `mailbox_changed` with the mailbox ids (IMAP IDLE, other processes).
    """
    if not items:
        return {}
    rows = await conn.fetch(LOCAL_DELIVER, [i[0] for i in items], [i[1] for i in items],
                            [i[2] for i in items], [i[3] for i in items],
                            [i[4] if len(i) > 4 else None for i in items],
                            [" ".join(i[5]) or None if len(i) > 5 else None for i in items])
    delivered = {r["k"]: r["mailbox_id"] for r in rows}
    boxes = sorted(set(delivered.values()))
    # NOTIFY payloads are limited to 8000 bytes: send the ids in chunks.
    chunk: list[str] = []
    size = 0
    for b in boxes:
        s = str(b)
        if size + len(s) + 1 > 7900:
            await conn.execute("select pg_notify('mailbox_changed', $1)", ",".join(chunk))
            chunk, size = [], 0
        chunk.append(s)
        size += len(s) + 1
    if chunk:
        await conn.execute("select pg_notify('mailbox_changed', $1)", ",".join(chunk))
    return delivered


async def list_queue(conn: Conn, state: str | None = None, limit: int = 1000) -> list[QueueRow]:
    q = ROW_SELECT + (" where q.state = $2" if state else "") + " order by q.id limit $1"
    args: list[Any] = [limit] + ([state] if state else [])
    return [_row(r) for r in await conn.fetch(q, *args)]


async def rows_for(conn: Conn, ident: str) -> list[QueueRow]:
    """Rows matching a queue id or a numeric row id."""
    if ident.isdigit():
        rows = await conn.fetch(ROW_SELECT + " where q.id = $1 or q.queue_id = $2 order by q.id",
                                int(ident), ident)
    else:
        rows = await conn.fetch(ROW_SELECT + " where q.queue_id = $1 order by q.id", ident.upper())
    return [_row(r) for r in rows]


async def deliveries_for(conn: Conn, queue_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch("select recipient, status, detail, attempts, at from deliveries"
                            " where queue_id = $1 order by id", queue_id)
    return [{**dict(r), "at": r["at"].isoformat()} for r in rows]


async def set_state(conn: Conn, ids: Sequence[int], state: str, *, from_states: Sequence[str]) -> int:
    res = await conn.execute(
        "update queue set state = $2, next_attempt = case when $2 = 'ready' then now()"
        " else next_attempt end where id = any($1::bigint[]) and state = any($3::text[])",
        list(ids), state, list(from_states))
    return int(res.split()[-1])


async def stats(conn: Conn) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "select state, transport, case when domain = '' then '(local)' else domain end as destination,"
        " count(*) as count, min(created_at) as oldest from queue"
        " group by 1, 2, 3 order by 4 desc, 1, 3")
    return [{**dict(r), "oldest": r["oldest"].isoformat()} for r in rows]
