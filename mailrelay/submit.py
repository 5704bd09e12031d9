"""The submission stage ("cleanup", as in Postfix): one `submit()` for every entry point.

SMTP, the CLI, official documents and bounces all come through here. The stage adds the
trace and missing headers, drops Bcc:, expands aliases and unit lists, de-duplicates
recipients, parses the MIME structure once, and writes the message once plus one queue
row per recipient in ONE transaction. Many submissions share one COMMIT (group commit):
while a commit is in flight the next batch gathers, so the durable path costs one fsync
per batch, not per message (`smtp.group_commit_ms` is how long a batch may wait for
company). `submit()` returns only after COMMIT: then the caller says 250. Recipients
delivered inline who asked for NOTIFY=SUCCESS (RFC 3461) get their notice after COMMIT.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid
from typing import Any

import asyncpg

from cxkernel.batcher import Batcher
from cxkernel.errors import CxError, Unavailable
from cxkernel.metrics import Metrics
from mailrelay.addressbook import AddressBook
from mailrelay.dsn import notify_wants
from mailrelay.headers import drop_field, has_field
from mailrelay.mime import parse_message
from mailrelay.queue import repo
from mailrelay.smtp.policy import Route, route_recipient

log = logging.getLogger("cxgw.mail")

PARSE_IN_EXECUTOR = 64 * 1024
VOUCHED_SOURCES = frozenset({"submission", "cli", "docs", "dsn"})  # origins we DKIM-sign  # larger messages are parsed off the event loop


def new_queue_id() -> str:
    """A short, unique, sortable queue id (time in ms + random), e.g. 19B2F3A81C4E7D2A."""
    return f"{int(time.time() * 1000):011X}{secrets.token_hex(3).upper()}"


@dataclass(frozen=True)
class ClientInfo:
    """Facts about where a message came from, for Received: and logs."""

    protocol: str = "ESMTP"  # ESMTP, ESMTPS, ESMTPSA, ESMTPA, LOCAL
    helo: str = ""
    address: str = ""
    hostname: str = ""
    auth_user: str | None = None
    tls: str | None = None


@dataclass
class Submission:
    sender: str  # envelope reverse-path; "" is the null sender (bounces)
    recipients: Sequence[str]  # envelope forward-paths
    raw: bytes  # the message, CRLF line endings
    client: ClientInfo = field(default_factory=ClientInfo)
    source: str = "smtp"  # origin: smtp (port 25) | submission (authenticated) | cli | dsn | docs
    routes: dict[str, Route] | None = None  # precomputed at RCPT time
    envid: str | None = None
    notify: str | None = None  # NOTIFY for every recipient without its own in rcpt_dsn
    ret: str | None = None
    # RFC 3461 per recipient: address -> (NOTIFY, ORCPT address), as given at RCPT.
    rcpt_dsn: dict[str, tuple[str | None, str | None]] | None = None
    folder: str | None = None  # local delivery into this mailbox (None: INBOX; "Junk")


@dataclass(frozen=True)
class SubmitResult:
    queue_id: str
    message_id: int
    recipients: int  # queue rows written after expansion


class MailboxFull(CxError):
    """Every recipient's mailbox lacks room for the message: nothing was accepted."""

    smtp_code = 452  # RFC 5321 §4.5.3.1.10 / RFC 3463 X.2.2
    smtp_enhanced = "4.2.2"

    def __init__(self) -> None:
        super().__init__("Mailbox full", reason="over quota at delivery")


#: A submission waiting for the group commit: queue id, message, its waiter.
_Pending = tuple[str, repo.NewMessage, "asyncio.Future[int]"]


class Submitter:
    """The submission stage. `book` is a callable so the address book can be reloaded."""

    def __init__(self, pool: asyncpg.Pool, book: Callable[[], AddressBook], hostname: str,
                 metrics: Metrics | None = None, max_batch: int = 256, max_inflight: int = 2,
                 on_committed: Callable[[], None] | None = None,
                 dkim: Callable[[bytes], bytes] | None = None, domain: str = "",
                 group_commit_ms: float = 0.0) -> None:
        self.pool = pool
        self.book = book
        self.hostname = hostname
        self.metrics = metrics or Metrics()
        self.max_batch = max_batch
        # Group commit: smtp.group_commit_ms lets a batch gather before it is written.
        self._batches: Batcher[_Pending] = Batcher(
            self._commit, max_batch=max_batch, max_inflight=max_inflight,
            window=group_commit_ms / 1000.0)
        self.on_committed = on_committed
        self.dkim = dkim  # signs outbound mail of `domain` (CPU-bound: run in the executor)
        self.domain = domain.lower()
        # Success notices for inline deliveries: (queue id, sender, envid, raw,
        # [(recipient, original recipient)]) -> DSN (the bounce stage).
        self.on_delivered: Callable[[str, str, str | None, bytes, list[tuple[str, str | None]]],
                                    Awaitable[None]] | None = None
        self._notice_tasks: set[asyncio.Task[None]] = set()

    # ---- cleanup ---------------------------------------------------------------------
    def cleanup_headers(self, sub: Submission, queue_id: str, now: datetime) -> bytes:
        raw = sub.raw
        if sub.source in ("submission", "cli", "docs"):
            raw = drop_field(raw, b"Bcc")  # RFC 5322 §3.6.3: Bcc never travels
            extra = b""
            if not has_field(raw, b"Message-ID"):
                extra += f"Message-ID: {make_msgid(domain=self.hostname)}\r\n".encode()
            if not has_field(raw, b"Date"):
                extra += f"Date: {format_datetime(now)}\r\n".encode()
            if extra:
                end = raw.find(b"\r\n\r\n")
                raw = raw[:end + 2] + extra + raw[end + 2:] if end >= 0 else raw + b"\r\n" + extra
        return self.received(sub, queue_id, now) + raw

    def received(self, sub: Submission, queue_id: str, now: datetime) -> bytes:
        """The Received: trace field (RFC 5321 §4.4); the auth user is never disclosed."""
        c = sub.client
        if sub.source in ("cli", "dsn", "docs"):
            frm = f"from localhost (cxgw {sub.source})"
        else:
            frm = f"from {c.helo or 'unknown'} ({c.hostname or 'unknown'} [{c.address or 'unknown'}])"
        tls = f"\r\n\t(using {c.tls})" if c.tls else ""
        rcpt = f"\r\n\tfor <{sub.recipients[0]}>" if len(sub.recipients) == 1 else ""
        return (f"Received: {frm}{tls}\r\n\tby {self.hostname} (cx-gateway) with {c.protocol}"
                f" id {queue_id}{rcpt};\r\n\t{format_datetime(now)}\r\n").encode("utf-8", "replace")

    def expand(self, sub: Submission) -> list[tuple[Any, ...]]:
        """Queue rows (QUEUE_COLUMNS minus ids) after alias/list expansion and de-duplication."""
        book = self.book()
        rows: list[tuple[Any, ...]] = []
        seen: set[tuple[str, str]] = set()

        notify = sub.notify

        def add(transport: str, rcpt: str, orig: str | None, domain: str) -> None:
            key = (transport, rcpt.lower() if transport != "remote" else rcpt)
            if key in seen:
                return
            seen.add(key)
            rows.append((sub.sender, rcpt, orig, domain, transport, sub.envid, notify, sub.ret,
                         sub.folder if transport == "local" else None))

        for rcpt in sub.recipients:
            route = (sub.routes or {}).get(rcpt) or route_recipient(rcpt, book, relay_allowed=True)
            notify, orcpt = (sub.rcpt_dsn or {}).get(rcpt, (sub.notify, None))
            if route.transport == "remote":
                add("remote", route.recipient, orcpt, route.domain)
                continue
            exp = route.expansion
            if exp is None:
                continue
            if route.transport == "docs":
                add("docs", route.recipient, orcpt, "")
                continue
            orig = orcpt or (None if exp.kind == "account" else route.recipient)
            for acct in exp.accounts:
                add("local", acct, orig, "")
            for ext in exp.external:
                add("remote", ext, orcpt or route.recipient, ext.rpartition("@")[2].lower())
        return rows

    # ---- the stage -------------------------------------------------------------------
    def vouched(self, sub: Submission) -> bool:
        """May our DKIM key sign this? Only what we vouch for, decided by the origin the
        entry point states, never guessed from addresses: authenticated submission, the
        CLI, documents and bounces (DSNs have the null sender); for the first three the
        sender must also be ours. Port-25 mail ("smtp"), even forwarded, is never signed."""
        if sub.source == "dsn":
            return True
        if sub.source == "submission" and not sub.client.auth_user:
            return False
        return (sub.source in VOUCHED_SOURCES
                and sub.sender.lower().endswith("@" + self.domain))

    async def _prepare(self, sub: Submission) -> tuple[str, repo.NewMessage]:
        now = datetime.now(UTC)
        queue_id = new_queue_id()
        raw = self.cleanup_headers(sub, queue_id, now)
        rows = self.expand(sub)
        loop = asyncio.get_running_loop()
        if self.dkim is not None and self.vouched(sub) and any(r[4] == "remote" for r in rows):
            # Signed once, before queueing; nothing touches the bytes afterwards.
            raw = await loop.run_in_executor(None, self.dkim, raw)
        if len(raw) > PARSE_IN_EXECUTOR:
            structure = await asyncio.get_running_loop().run_in_executor(None, parse_message, raw)
        else:
            structure = parse_message(raw)
        return queue_id, repo.NewMessage(raw, structure, rows)

    def _queued(self, sub: Submission, queue_id: str, message: repo.NewMessage) -> None:
        self.metrics.inc("mail_messages_queued_total", source=sub.source)
        log.info("queued id=%s from=<%s> rcpts=%d size=%d source=%s client=%s", queue_id,
                 sub.sender, len(message.rows), len(message.raw), sub.source,
                 sub.client.address or "-")

    async def submit(self, sub: Submission) -> SubmitResult:
        queue_id, message = await self._prepare(sub)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._batches.add((queue_id, message, fut))
        message_id = await fut
        self._queued(sub, queue_id, message)
        return SubmitResult(queue_id, message_id, len(message.rows))

    async def prepare(self, sub: Submission) -> tuple[str, repo.NewMessage]:
        """The stage's work before the database (headers, routing, DKIM, structure): a
        refusal (unknown recipient...) is raised here, before any transaction is open."""
        return await self._prepare(sub)

    async def submit_in(self, conn: Any, sub: Submission,
                        prepared: tuple[str, repo.NewMessage] | None = None) -> SubmitResult:
        """The same stage inside the caller's transaction on `conn` (no group commit):
        the message, its queue rows and the inline local deliveries commit or roll back
        together with whatever else the caller writes there (official documents record
        a verified copy's delivery with its verdict this way: nothing twice after a
        crash). Recipients over quota are queued (never refused); no success notices
        (callers use the null sender). The queue rows' NOTIFY fires at the caller's
        COMMIT. `prepared`: the result of :meth:`prepare` for `sub`, if already made."""
        queue_id, message = prepared or await self._prepare(sub)
        ids, inline = await repo.enqueue(conn, [queue_id], [message])
        if inline:
            self.metrics.inc("mail_delivered_total", len(inline), transport="local")
        self._queued(sub, queue_id, message)
        return SubmitResult(queue_id, ids[0], len(message.rows))

    async def submit_many_in(self, conn: Any, prepared: Sequence[tuple[Submission, tuple[
            str, repo.NewMessage]]]) -> list[SubmitResult]:
        """:meth:`submit_in` for several submissions already through :meth:`prepare`,
        written together (one COPY of their messages, one local-delivery statement for
        all their recipients): a group commit that the caller owns, with whatever else
        it writes in the same transaction (official documents verified while sent)."""
        if not prepared:
            return []
        ids, inline = await repo.enqueue(conn, [p[0] for _s, p in prepared],
                                         [p[1] for _s, p in prepared])
        if inline:
            self.metrics.inc("mail_delivered_total", len(inline), transport="local")
        out = []
        for (sub, (queue_id, message)), mid in zip(prepared, ids, strict=True):
            self._queued(sub, queue_id, message)
            out.append(SubmitResult(queue_id, mid, len(message.rows)))
        return out

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            refused: set[int] = set()
            async with self.pool.acquire() as conn, conn.transaction():
                ids, inline = await repo.enqueue(conn, [b[0] for b in batch],
                                                 [b[1] for b in batch], refused=refused)
        except Exception as exc:  # every waiter gets an answer: a 4xx, never a hang
            log.error("group commit of %d messages failed: %r", len(batch), exc)
            err = Unavailable("Queue write failed; try again later", reason=str(exc))
            for _q, _m, fut in batch:
                if not fut.done():
                    fut.set_exception(err)
        else:
            self.metrics.inc("mail_group_commits_total")
            if inline:
                self.metrics.inc("mail_delivered_total", len(inline), transport="local")
                if log.isEnabledFor(logging.INFO):
                    for qid, rcpt in inline:
                        log.info("delivered id=%s to=<%s> transport=local", qid, rcpt)
            for n, ((_q, _m, fut), mid) in enumerate(zip(batch, ids, strict=True)):
                if fut.done():
                    continue
                if n in refused:  # every recipient a local mailbox without room for it
                    fut.set_exception(MailboxFull())
                else:
                    fut.set_result(mid)
            if inline and self.on_delivered is not None:
                self._success_notices(batch, inline)
            if self.on_committed:
                self.on_committed()

    def _success_notices(self, batch: list[_Pending],
                         inline: list[tuple[str, str]]) -> None:
        """RFC 3461 §6.2.7.1: a "delivered" notice for each inline recipient that asked."""
        assert self.on_delivered is not None
        delivered = set(inline)
        for qid, m, _fut in batch:
            wanted = [(r[1], r[2]) for r in m.rows
                      if r[4] == "local" and r[0] and (qid, r[1]) in delivered
                      and notify_wants(r[6], "SUCCESS")]
            if not wanted:
                continue
            task = asyncio.get_running_loop().create_task(
                self._notice(qid, m.rows[0][0], m.rows[0][5], m.raw, wanted))
            self._notice_tasks.add(task)
            task.add_done_callback(self._notice_tasks.discard)

    async def _notice(self, qid: str, sender: str, envid: str | None, raw: bytes,
                      wanted: list[tuple[str, str | None]]) -> None:
        assert self.on_delivered is not None
        try:
            await self.on_delivered(qid, sender, envid, raw, wanted)
        except Exception:
            log.exception("could not queue a success notice for %s", qid)

    async def close(self) -> None:
        """Wait for in-flight commits (new submissions are refused by the listeners first)."""
        while self._batches.busy or self._notice_tasks:
            await self._batches.drain()
            if self._notice_tasks:
                await asyncio.gather(*self._notice_tasks, return_exceptions=True)
