"""The queue manager ("qmgr"): one scheduler per process.

It wakes on NOTIFY `queue_ready` (or an in-process nudge after a local commit), on the
timer of the next retry, and when deliveries finish. It claims due rows with SKIP LOCKED
and a lease, keeps at most `max_active` deliveries in flight and `per_destination` per
remote domain, and turns per-recipient results into deliveries, retries with exponential
backoff, or bounces (RFC 3464 DSN to the sender, never for a bounce). Crashed processes'
claims come back when their lease expires.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg

from cxkernel.config import QueueConfig
from cxkernel.metrics import Metrics
from mailrelay.addressbook import AddressBook
from mailrelay.queue import repo
from mailrelay.queue.repo import QueueRow

log = logging.getLogger("cxgw.queue")


@dataclass(frozen=True)
class Outcome:
    """Per-recipient result of a delivery attempt."""

    status: str  # ok | temp | perm
    code: int = 250
    enhanced: str = "2.0.0"
    text: str = "ok"
    remote_mta: str = ""

    @property
    def detail(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


class RemoteTarget(Protocol):
    async def deliver(self, sender: str, recipients: list[str], raw: bytes) -> list[Any]: ...


DocsHandler = Callable[[Sequence[QueueRow]], Awaitable[dict[int, Outcome]]]


class LocalFilter(Protocol):
    """Sieve at local delivery (mailrelay.sieve.delivery): picks the rows it filters and
    delivers them itself, returning outcomes only for rows it did not finish."""

    async def split(self, rows: Sequence[QueueRow]) -> tuple[list[QueueRow], list[QueueRow]]: ...
    async def deliver(self, rows: Sequence[QueueRow]) -> dict[int, Outcome]: ...
# Called with the failed (or delayed) recipients of ONE queue id and "failed" | "delayed".
BounceSink = Callable[[Sequence[tuple[QueueRow, Outcome]], str], Awaitable[None]]


def backoff(attempts: int, cfg: QueueConfig) -> float:
    """Seconds until the next try after `attempts` tries: initial, doubling, capped."""
    return float(min(cfg.retry_initial * (2 ** max(attempts - 1, 0)), cfg.retry_max))


class Scheduler:
    def __init__(self, pool: asyncpg.Pool, cfg: QueueConfig, book: Callable[[], AddressBook],
                 remote: RemoteTarget | None, bounce: BounceSink,
                 metrics: Metrics | None = None, batch: int = 500) -> None:
        self.pool = pool
        self.cfg = cfg
        self.book = book
        self.remote = remote
        self.bounce = bounce
        self.docs_handler: DocsHandler | None = None
        self.sieve: LocalFilter | None = None  # set by the mail component (issue 16)
        self.metrics = metrics or Metrics()
        self.batch = batch
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._wake = asyncio.Event()
        self._stopping = False
        self._active = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dest_sem: dict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(cfg.per_destination))
        self._main: asyncio.Task[None] | None = None
        self._listen_conn: asyncpg.Connection | None = None

    # ---- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        self._listen_conn = await self.pool.acquire()
        await self._listen_conn.add_listener("queue_ready", self._on_notify)
        async with self.pool.acquire() as conn:
            await repo.reclaim_expired(conn)
            await self._reclaim_dead_local_owners(conn)
        self._main = asyncio.get_running_loop().create_task(self._run())

    async def _reclaim_dead_local_owners(self, conn: Any) -> None:
        """Rows claimed by a process on this host that no longer exists (kill -9, crash)
        need not wait for their lease to expire."""
        host = socket.gethostname()
        for owner in await repo.active_owners(conn):
            h, _, rest = owner.partition(":")
            pid = rest.partition(":")[0]
            if h != host or not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                await repo.release_owner(conn, owner)
                log.info("reclaimed queue entries of dead process %s", owner)
            except PermissionError:
                pass

    def _on_notify(self, *args: Any) -> None:
        self._wake.set()

    def nudge(self) -> None:
        """Something was queued in this process: look now."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop claiming, let in-flight deliveries finish, hand back what we still hold."""
        self._stopping = True
        self._wake.set()
        if self._main:
            await self._main
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=20)
        if self._listen_conn is not None:
            conn, self._listen_conn = self._listen_conn, None
            await conn.remove_listener("queue_ready", self._on_notify)
            await self.pool.release(conn)
        async with self.pool.acquire() as conn:
            await repo.release_owner(conn, self.owner)

    async def _run(self) -> None:
        last_reap = asyncio.get_running_loop().time()
        last_history = 0.0
        while not self._stopping:
            self._wake.clear()
            try:
                claimed = await self.tick()
            except (OSError, asyncpg.PostgresError) as exc:
                log.error("queue scan failed: %s", exc)
                claimed = 0
                await asyncio.sleep(1)
            now = asyncio.get_running_loop().time()
            if now - last_history > 3600:
                last_history = now
                try:
                    async with self.pool.acquire() as conn:
                        await repo.expire_history(conn, self.cfg.history_days)
                except (OSError, asyncpg.PostgresError) as exc:
                    log.warning("expiring delivery history failed: %s", exc)
            if now - last_reap > max(self.cfg.lease_seconds / 2, 1):
                last_reap = now
                try:
                    async with self.pool.acquire() as conn:
                        if await repo.reclaim_expired(conn):
                            continue
                except (OSError, asyncpg.PostgresError):
                    pass
            if claimed:
                continue
            timeout = await self._sleep_for()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    async def _sleep_for(self) -> float:
        try:
            async with self.pool.acquire() as conn:
                due = await repo.next_due(conn)
        except (OSError, asyncpg.PostgresError):
            return 1.0
        if due is None:
            return 30.0
        return max(0.01, min(30.0, (due - datetime.now(UTC)).total_seconds()))

    # ---- one pass --------------------------------------------------------------------
    async def tick(self) -> int:
        room = self.cfg.max_active - self._active
        if room <= 0:
            return 0
        async with self.pool.acquire() as conn:
            rows = await repo.claim(conn, self.owner, min(room, self.batch), self.cfg.lease_seconds)
        if not rows:
            return 0
        self.metrics.inc("mail_queue_claimed_total", len(rows))
        by_transport: dict[str, list[QueueRow]] = defaultdict(list)
        for r in rows:
            by_transport[r.transport].append(r)
        if by_transport.get("local"):
            self._spawn(self._deliver_local(by_transport["local"]), len(by_transport["local"]))
        if by_transport.get("docs"):
            self._spawn(self._deliver_docs(by_transport["docs"]), len(by_transport["docs"]))
        groups: dict[tuple[int, str, str], list[QueueRow]] = defaultdict(list)
        for r in by_transport.get("remote", ()):
            groups[(r.message_id, r.sender, r.domain)].append(r)
        for group in groups.values():
            self._spawn(self._deliver_remote(group), len(group))
        return len(rows)

    def _spawn(self, coro: Awaitable[None], weight: int) -> None:
        self._active += weight

        async def run() -> None:
            try:
                await coro
            except Exception:
                log.exception("delivery task failed")
            finally:
                self._active -= weight
                self._wake.set()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- transports ------------------------------------------------------------------
    async def _deliver_local(self, rows: Sequence[QueueRow]) -> None:
        if self.sieve is not None:  # recipients with an active Sieve script
            rows, filtered = await self.sieve.split(rows)
            if filtered:
                failed = await self.sieve.deliver(filtered)
                self.metrics.inc("mail_delivered_total", len(filtered) - len(failed),
                                 transport="local")
                if failed:
                    await self.apply([r for r in filtered if r.id in failed], failed)
            if not rows:
                return
        items = [(r.id, r.message_id, r.recipient, r.size) for r in rows]
        async with self.pool.acquire() as conn, conn.transaction():
            done = await repo.deliver_local(conn, items)
            ok = [r for r in rows if r.id in done]
            await repo.finish(conn, ok, "delivered", ["local INBOX"] * len(ok))
        for r in ok:
            log.info("delivered id=%s to=<%s> transport=local", r.queue_id, r.recipient)
        self.metrics.inc("mail_delivered_total", len(ok), transport="local")
        missing = {r.id: Outcome("perm", 550, "5.1.1", "mailbox unavailable")
                   for r in rows if r.id not in done}
        if missing:
            await self.apply([r for r in rows if r.id in missing], missing)

    async def _deliver_docs(self, rows: Sequence[QueueRow]) -> None:
        if self.docs_handler is not None:
            results = await self.docs_handler(rows)
        else:
            results = await self.docs_to_clerks(rows)
        await self.apply(rows, results)

    async def docs_to_clerks(self, rows: Sequence[QueueRow]) -> dict[int, Outcome]:
        """Default document delivery: into the INBOX of each clerk of the receiving unit."""
        book = self.book()
        results: dict[int, Outcome] = {}
        items: list[tuple[int, int, str, int]] = []
        owners: dict[int, int] = {}
        for r in rows:
            exp = book.lookup(r.recipient)
            clerks = book.clerks(exp.unit) if exp and exp.unit else []
            if not clerks:
                results[r.id] = Outcome("temp", 450, "4.2.0", "receiving unit has no active clerk")
                continue
            for c in clerks:
                key = len(items) + 1
                owners[key] = r.id
                items.append((key, r.message_id, c, r.size))
        if items:
            async with self.pool.acquire() as conn, conn.transaction():
                done = await repo.deliver_local(conn, items)
            for key in done:
                results[owners[key]] = Outcome("ok", 250, "2.0.0", "delivered to unit clerks")
        for r in rows:
            results.setdefault(r.id, Outcome("temp", 450, "4.2.0", "clerk mailboxes unavailable"))
        return results

    async def _deliver_remote(self, rows: Sequence[QueueRow]) -> None:
        first = rows[0]
        if self.remote is None:
            await self.apply(rows, {r.id: Outcome("temp", 451, "4.4.0", "no remote transport")
                                    for r in rows})
            return
        async with self._dest_sem[first.domain]:
            async with self.pool.acquire() as conn:
                raw = await repo.message_raw(conn, first.message_id)
            try:
                res = await self.remote.deliver(first.sender, [r.recipient for r in rows], raw)
            except Exception as exc:  # a transport bug must not lose mail: retry later
                log.exception("remote delivery to %s failed", first.domain)
                res = [Outcome("temp", 451, "4.4.0", f"delivery error: {exc.__class__.__name__}")
                       for _ in rows]
        by_rcpt = {getattr(x, "recipient", None): x for x in res}
        results: dict[int, Outcome] = {}
        for i, r in enumerate(rows):
            x = by_rcpt.get(r.recipient) or (res[i] if i < len(res) else None)
            if x is None:
                results[r.id] = Outcome("temp", 451, "4.4.0", "no result")
            else:
                results[r.id] = Outcome(x.status, x.code, x.enhanced, x.text,
                                        getattr(x, "remote_mta", ""))
        await self.apply(rows, results)

    # ---- results ---------------------------------------------------------------------
    async def apply(self, rows: Sequence[QueueRow], results: dict[int, Outcome]) -> None:
        """Turn outcomes into deliveries, retries or bounces."""
        now = datetime.now(UTC)
        ok = [r for r in rows if results[r.id].status == "ok"]
        perm: list[tuple[QueueRow, Outcome]] = []
        delayed: list[tuple[QueueRow, Outcome]] = []
        async with self.pool.acquire() as conn, conn.transaction():
            if ok:
                await repo.finish(conn, ok, "delivered", [results[r.id].detail for r in ok])
            for r in rows:
                out = results[r.id]
                if out.status == "ok":
                    continue
                expired = now - r.created_at > timedelta(seconds=self.cfg.max_age)
                if out.status == "perm" or expired:
                    if expired and out.status != "perm":
                        out = Outcome("perm", out.code, out.enhanced,
                                      f"gave up after {r.attempts} attempts: {out.text}",
                                      out.remote_mta)
                    perm.append((r, out))
                    continue
                await repo.defer(conn, r, backoff(r.attempts, self.cfg), out.detail)
                log.info("deferred id=%s to=<%s> attempts=%d reason=%s", r.queue_id, r.recipient,
                         r.attempts, out.detail)
                self.metrics.inc("mail_deferred_total", transport=r.transport)
                if (self.cfg.delay_warning and not r.delay_notified and r.sender
                        and now - r.created_at > timedelta(seconds=self.cfg.delay_warning)
                        and "NEVER" not in (r.notify or "").upper()):
                    delayed.append((r, out))
            if perm:
                await repo.finish(conn, [p[0] for p in perm], "bounced", [p[1].detail for p in perm])
            if delayed:
                await repo.mark_delay_notified(conn, [d[0].id for d in delayed])
        for r in ok:
            if r.transport != "local":
                log.info("delivered id=%s to=<%s> transport=%s", r.queue_id, r.recipient, r.transport)
                self.metrics.inc("mail_delivered_total", transport=r.transport)
        for r, out in perm:
            log.info("bounced id=%s to=<%s> reason=%s", r.queue_id, r.recipient, out.detail)
            self.metrics.inc("mail_bounced_total", transport=r.transport)
        # RFC 5321 §6.1 / RFC 3464: never a bounce for a bounce (null sender).
        for kind, items in (("failed", perm), ("delayed", delayed)):
            by_qid: dict[str, list[tuple[QueueRow, Outcome]]] = defaultdict(list)
            for r, out in items:
                if r.sender and "NEVER" not in (r.notify or "").upper():
                    by_qid[r.queue_id].append((r, out))
            for group in by_qid.values():
                try:
                    await self.bounce(group, kind)
                except Exception:
                    log.exception("could not queue a %s notice for %s", kind, group[0][0].queue_id)
