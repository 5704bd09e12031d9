"""Queue and mail-store persistence: the only SQL of the mail pipeline.

Everything a stage writes for one batch happens in one transaction: messages and queue rows
at submission (group commit), mailbox entries plus queue removal plus delivery records at
local delivery. Claims use `FOR UPDATE SKIP LOCKED` with a lease so several processes can
share the queue and a crashed process's claims come back when the lease expires.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from directory import nodes_repo
from mailrelay.sieve import repo as sieve_repo

# A connection or a pool's proxy of one (duck-typed alike).
Conn: TypeAlias = Any

QUEUE_COLUMNS = ("queue_id", "message_id", "sender", "recipient", "orig_rcpt", "domain",
                 "transport", "envid", "notify", "ret", "folder")


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
    folder: str | None = None  # local delivery into this mailbox (None: INBOX), e.g. Junk

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "queue_id": self.queue_id, "sender": self.sender,
                "recipient": self.recipient, "transport": self.transport,
                "domain": self.domain, "state": self.state, "attempts": self.attempts,
                "next_attempt": self.next_attempt.isoformat(), "last_error": self.last_error,
                "created_at": self.created_at.isoformat(), "size": self.size}


ROW_SELECT = """
select q.id, q.queue_id, q.message_id, q.sender, q.recipient, q.orig_rcpt, q.domain,
       q.transport, q.state, q.attempts, q.next_attempt, q.last_error, q.created_at, m.size,
       q.delay_notified, q.envid, q.notify, q.ret, q.folder
from queue q join messages m on m.id = q.message_id"""


def _row(r: asyncpg.Record) -> QueueRow:
    return QueueRow(*r.values())


async def enqueue(conn: Conn, queue_ids: Sequence[str], messages: Sequence[NewMessage],
                  *, local_inline: bool = True,
                  refused: set[int] | None = None) -> tuple[list[int], list[tuple[str, str]]]:
    """Write messages and their queue rows (the caller holds the transaction).

    With `local_inline`, recipients with a local mailbox are delivered in this same
    transaction (the local stage run at once, as mox does): their INBOX entries commit
    together with the message, so there is nothing to claim, deliver and finish later.
    Rows that cannot be delivered inline (no active mailbox, over quota) are queued as
    usual; the scheduler bounces an over-quota row (DSN, 5.2.2). With `refused` (a set),
    a message whose every recipient is a local one over quota is not queued at all: its
    index goes into `refused` and the caller answers 452 4.2.2 (nothing was accepted).
    Returns (message ids, [(queue_id, recipient)] delivered inline).
    """
    ids = [r[0] for r in await conn.fetch(
        "select nextval('messages_id_seq') from generate_series(1, $1)", len(messages))]
    await conn.copy_records_to_table(
        "messages", columns=("id", "raw", "size", "structure"),
        records=[(mid, m.raw, len(m.raw), m.structure)
                 for mid, m in zip(ids, messages, strict=True)])
    width = len(QUEUE_COLUMNS) - 2  # rows written before a column was added get None
    records = [(qid, mid, *row, *(None,) * (width - len(row)))
               for qid, mid, m in zip(queue_ids, ids, messages, strict=True) for row in m.rows]
    inline: list[tuple[str, str]] = []
    if local_inline:
        # QUEUE_COLUMNS: queue_id, message_id, sender, recipient, orig_rcpt, domain, transport...
        sizes = {mid: len(m.raw) for mid, m in zip(ids, messages, strict=True)}
        local = [(i, r) for i, r in enumerate(records) if r[6] == "local"]
        if local:  # Sieve (issue 16): recipients with an active script wait in the queue for
            # the scheduler, which runs their script; one indexed query per batch.
            held = await sieve_repo.with_active_script(conn, list({r[3] for _, r in local}))
            local = [(i, r) for i, r in local if r[3] not in held]
        full: set[int] = set()
        skip: set[int] = set()  # rows of refused messages: neither delivered nor queued
        done: dict[int, int] = {}
        for folder in sorted({r[10] or "INBOX" for _i, r in local}):
            done.update(await deliver_local(
                conn, [(i, r[1], r[3], sizes[r[1]]) for i, r in local
                       if (r[10] or "INBOX") == folder], full, folder=folder))
        if full and refused is not None:
            # RFC 5321 §4.2.2 / RFC 3463 X.2.2: with nothing delivered, refuse the whole
            # message (452 4.2.2) rather than accept and bounce it.
            by_msg: dict[int, list[int]] = {}
            for i, r in enumerate(records):
                by_msg.setdefault(r[1], []).append(i)
            for n, mid in enumerate(ids):
                rows_of = by_msg.get(mid, [])
                if rows_of and all(i in full for i in rows_of):
                    refused.add(n)
                    skip.update(rows_of)
            if refused:
                await conn.execute("insert into message_gc(message_id) select unnest($1::bigint[])"
                                   " on conflict do nothing", [ids[n] for n in refused])
        if done:
            delivered = [records[i] for i in sorted(done)]
            await conn.copy_records_to_table(
                "deliveries", columns=("queue_id", "message_id", "sender", "recipient", "status",
                                       "detail", "attempts"),
                records=[(r[0], r[1], r[2], r[4] or r[3], "delivered", "local INBOX", 1)
                         for r in delivered])
            inline = [(r[0], r[3]) for r in delivered]
        if done or skip:
            records = [r for i, r in enumerate(records) if i not in done and i not in skip]
    if records:
        await conn.copy_records_to_table("queue", columns=QUEUE_COLUMNS, records=records)
        await conn.execute("select pg_notify('queue_ready', '')")
    return ids, inline


CLAIM_WITH_SLOTS = """
with pick as (
    select x.id from (
        select q.id, q.transport, q.domain, q.next_attempt,
               dense_rank() over (partition by q.transport, q.domain
                                  order by q.message_id, q.sender) as g
        from (select id, transport, domain, message_id, sender, next_attempt from queue
              where state = 'ready' and next_attempt <= now()
                and ($4::text[] is null or transport = any($4::text[]))
              order by next_attempt, id limit $2 * 4) q
    ) x
    left join unnest($5::text[], $6::int[]) as u(domain, used)
           on x.transport = 'remote' and u.domain = x.domain
    where x.transport <> 'remote' or x.g <= $7 - coalesce(u.used, 0)
    order by x.next_attempt, x.id limit $2
), c as (
    select id from queue where id in (select id from pick) and state = 'ready'
    order by next_attempt, id for update skip locked
)
update queue q set state = 'active', lease_owner = $1,
    lease_until = now() + make_interval(secs => $3), attempts = q.attempts + 1
from c where q.id = c.id returning q.id
"""


async def claim(conn: Conn, owner: str, limit: int, lease_seconds: int,
                transports: Sequence[str] | None = None, *,
                in_use: Mapping[str, int] | None = None,
                per_destination: int | None = None) -> list[QueueRow]:
    """Claim up to `limit` due rows for this process (SKIP LOCKED + lease).

    With `per_destination`, remote rows are claimed only for the delivery slots free now:
    per domain, at most `per_destination - in_use[domain]` deliveries (one delivery = the
    rows of one message and sender); a claimed row never waits for a slot."""
    if per_destination is None:
        rows = await conn.fetch(
            "with c as (select id from queue where state = 'ready' and next_attempt <= now()"
            "  and ($4::text[] is null or transport = any($4::text[]))"
            "  order by next_attempt, id limit $2 for update skip locked)"
            " update queue q set state = 'active', lease_owner = $1,"
            "  lease_until = now() + make_interval(secs => $3), attempts = q.attempts + 1"
            " from c where q.id = c.id returning q.id", owner, limit, float(lease_seconds),
            list(transports) if transports else None)
    else:
        used = dict(in_use or {})
        rows = await conn.fetch(CLAIM_WITH_SLOTS, owner, limit, float(lease_seconds),
                                list(transports) if transports else None, list(used),
                                list(used.values()), per_destination)
    if not rows:
        return []
    got = await conn.fetch(ROW_SELECT + " where q.id = any($1::bigint[]) order by q.id",
                           [r["id"] for r in rows])
    return [_row(r) for r in got]


async def renew(conn: Conn, owner: str, ids: Sequence[int], lease_seconds: float) -> set[int]:
    """Extend our lease on `ids`; returns the ids still ours (the others were lost)."""
    if not ids:
        return set()
    rows = await conn.fetch(
        "update queue set lease_until = now() + make_interval(secs => $3)"
        " where id = any($2::bigint[]) and lease_owner = $1 and state = 'active' returning id",
        owner, list(ids), float(lease_seconds))
    return {r["id"] for r in rows}


async def lock_owned(conn: Conn, owner: str, ids: Sequence[int]) -> set[int]:
    """Lock the rows of `ids` still leased to `owner` until the transaction ends (a reaper
    cannot hand them out meanwhile); returns their ids."""
    rows = await conn.fetch("select id from queue where id = any($2::bigint[])"
                            " and lease_owner = $1 and state = 'active' for update",
                            owner, list(ids))
    return {r["id"] for r in rows}


async def unclaim(conn: Conn, owner: str, ids: Sequence[int]) -> int:
    """Hand back rows claimed but not started (attempt not counted)."""
    res = await conn.execute(
        "update queue set state = 'ready', lease_owner = null, lease_until = null,"
        " attempts = greatest(attempts - 1, 0)"
        " where id = any($2::bigint[]) and lease_owner = $1 and state = 'active'",
        owner, list(ids))
    return await _ready_again(conn, int(res.split()[-1]))


async def _ready_again(conn: Conn, n: int) -> int:
    """Rows went back to ready: every node's scheduler should look (NOTIFY)."""
    if n:
        await conn.execute("select pg_notify('queue_ready', '')")
    return n


async def reclaim_expired(conn: Conn, dead_seconds: float | None = None) -> int:
    """Return rows whose owner is gone to the ready state.

    Without `dead_seconds`: rows whose lease ran out. With it (the node reaper): rows whose
    owner is not a live node (`directory.nodes`), and rows whose lease ran out more than
    `dead_seconds` ago (a live owner gets that grace to renew after a database outage)."""
    if dead_seconds is None:
        res = await conn.execute(
            "update queue set state = 'ready', lease_owner = null, lease_until = null"
            " where state = 'active' and lease_until < now()")
        return await _ready_again(conn, int(res.split()[-1]))
    res = await conn.execute(
        "update queue q set state = 'ready', lease_owner = null, lease_until = null"
        " where q.state = 'active' and (q.lease_owner is null"
        "  or q.lease_until < now() - make_interval(secs => $1)"
        "  or not " + nodes_repo.live_owner("q.lease_owner", "$1") + ")", float(dead_seconds))
    return await _ready_again(conn, int(res.split()[-1]))


async def release_owner(conn: Conn, owner: str) -> int:
    """On clean shutdown, hand back rows this process still holds (attempt not counted)."""
    res = await conn.execute(
        "update queue set state = 'ready', lease_owner = null, lease_until = null,"
        " attempts = greatest(attempts - 1, 0) where state = 'active' and lease_owner = $1", owner)
    return await _ready_again(conn, int(res.split()[-1]))


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


async def finish(conn: Conn, rows: Sequence[QueueRow], status: str, details: Sequence[str],
                 *, owner: str | None = None) -> list[QueueRow]:
    """Remove rows from the queue and record their outcome (delivered / bounced / deleted).

    With `owner`, only rows still leased to it are touched (a lost lease changes nothing);
    returns the rows removed."""
    if not rows:
        return []
    if owner is None:
        got = await conn.fetch("delete from queue where id = any($1::bigint[]) returning id",
                               [r.id for r in rows])
    else:
        got = await conn.fetch("delete from queue where id = any($1::bigint[])"
                               " and lease_owner = $2 returning id", [r.id for r in rows], owner)
    ids = {r["id"] for r in got}
    done = [(r, d) for r, d in zip(rows, details, strict=True) if r.id in ids]
    if done:
        await conn.copy_records_to_table(
            "deliveries", columns=("queue_id", "message_id", "sender", "recipient", "status",
                                   "detail", "attempts"),
            records=[(r.queue_id, r.message_id, r.sender, r.orig_rcpt or r.recipient, status, d,
                      r.attempts) for r, d in done])
    return [r for r, _ in done]


async def defer(conn: Conn, row: QueueRow, delay_seconds: float, error: str,
                *, owner: str | None = None) -> bool:
    """Back to ready after `delay_seconds`; with `owner` only while still its lease."""
    res = await conn.execute(
        "update queue set state = 'ready', lease_owner = null, lease_until = null,"
        " next_attempt = now() + make_interval(secs => $2), last_error = $3"
        " where id = $1 and ($4::text is null or lease_owner = $4)",
        row.id, float(delay_seconds), error, owner)
    return res.split()[-1] != "0"


async def mark_delay_notified(conn: Conn, ids: Sequence[int]) -> None:
    await conn.execute("update queue set delay_notified = true where id = any($1::bigint[])", list(ids))


# Sieve (issue 16): $6 carries IMAP flags per item (space-separated; null = none, the
# plain path); they ride along through cand/numbered into mailbox_messages.flags.
LOCAL_DELIVER = """
with r as (
    select * from unnest($1::bigint[], $2::bigint[], $3::text[], $4::int[], $6::text[])
        as t(k, mid, rcpt, size, flags)
), mb as (
    select m.id, a.address, a.id as account_id, a.quota_bytes from mailboxes m
    join accounts a on a.id = m.account_id
    where m.name = $5 and a.address = any($3::text[]) and a.status = 'active'
    order by m.id for update of m
), used as (
    select u.account_id, u.bytes from mail_usage u
    where u.account_id in (select account_id from mb) for update
), cand as (
    select r.k, r.mid, r.size, r.flags, mb.id as mailbox_id, mb.account_id,
           mb.quota_bytes <= 0 or coalesce(us.bytes, 0)
             + sum(r.size) over (partition by mb.account_id order by r.k) <= mb.quota_bytes as fits
    from r join mb on mb.address = r.rcpt left join used us on us.account_id = mb.account_id
), numbered as (
    select c.k, c.mid, c.size, c.flags, c.mailbox_id, c.account_id,
           row_number() over (partition by c.mailbox_id order by c.k) as n,
           count(*) over (partition by c.mailbox_id) as cnt
    from cand c where c.fits
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
select c.k, case when c.fits then c.mailbox_id end as mailbox_id from cand c
"""


SPECIAL_USE = {"Junk": "\\Junk"}  # RFC 6154 special-use of mailboxes made at delivery


async def deliver_local(conn: Conn, items: Sequence[tuple[Any, ...]],
                        over_quota: set[int] | None = None,
                        folder: str = "INBOX") -> dict[int, int]:
    """Put messages into INBOXes (or `folder`): items are (key, message_id, address, size),
    optionally with a fifth element, the IMAP flags to set (Sieve imap4flags, RFC 5232).

    A `folder` other than INBOX is created when missing (Junk with \\Junk, RFC 6154).
    Returns key -> mailbox id for the items delivered; missing keys had no active account
    or would take the account over its quota: the mailbox usage plus the message size
    is checked in this same statement, with the usage row locked (issue 13: no snapshot,
    no overshoot). Keys refused for quota are added to `over_quota` when given.
    Notifies `mailbox_changed` with the mailbox ids (IMAP IDLE, other processes).
    """
    if not items:
        return {}
    if folder != "INBOX":
        await conn.execute(
            "insert into mailboxes(account_id, name, special_use) select a.id, $2, $3"
            " from accounts a where a.address = any($1::text[]) and a.status = 'active'"
            " on conflict (account_id, name) do nothing",
            sorted({i[2] for i in items}), folder, SPECIAL_USE.get(folder))
    rows = await conn.fetch(LOCAL_DELIVER, [i[0] for i in items], [i[1] for i in items],
                            [i[2] for i in items], [i[3] for i in items], folder,
                            [" ".join(i[4]) or None if len(i) > 4 else None for i in items])
    delivered = {r["k"]: r["mailbox_id"] for r in rows if r["mailbox_id"] is not None}
    if over_quota is not None:
        over_quota.update(r["k"] for r in rows if r["mailbox_id"] is None)
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


async def leases_by_owner(conn: Any) -> dict[str, int]:
    """Queue rows leased per owner node (`cxgw nodes`)."""
    rows = await conn.fetch("select lease_owner, count(*) n from queue"
                            " where state = 'active' and lease_owner is not null group by 1")
    return {r["lease_owner"]: int(r["n"]) for r in rows}
