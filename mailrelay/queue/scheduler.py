"""The queue manager ("qmgr"): one scheduler per process.

It wakes on NOTIFY `queue_ready` (or an in-process nudge after a local commit), on the
timer of the next retry, and when deliveries finish. It claims due rows with SKIP LOCKED
and a lease, keeps at most `max_active` deliveries in flight and `per_destination` per
remote domain (a domain whose slots are all busy is not claimed at all), and turns
per-recipient results into deliveries, retries with exponential backoff, or bounces
(RFC 3464 DSN to the sender, never for a bounce).

A lease is a promise we renew (ARCHITECTURE rule 14): the lease owner is this process's
node id (`directory.nodes`); one task renews the lease of every row in flight every third
of `queue.lease_seconds`, and every state change (finish, defer, bounce) applies only to
rows still leased to us. A row whose lease was lost (another node took it over) is
abandoned: a remote delivery not yet past DATA is dropped before DATA, and the loss is
logged as a WARNING. The node's reaper hands back rows of dead nodes within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg

from cxkernel.config import NodeConfig, QueueConfig
from cxkernel.listen import Listener, Subscription
from cxkernel.metrics import Metrics
from directory.nodes import Node
from mailrelay.addressbook import AddressBook
from mailrelay.dsn import notify_wants
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
    dsn_passed: bool = False  # the next hop took our DSN request (RFC 3461 §5.2)

    @property
    def detail(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


class RemoteTarget(Protocol):
    async def deliver(self, sender: str, recipients: list[str], raw: bytes, *,
                      dsn: Any = None,
                      abort: Callable[[], bool] | None = None) -> list[Any]: ...


# Called with claimed rows and the lease owner (this node's id): the handler changes state
# only for rows still leased to that owner (`repo.lock_owned` in its own transaction).
DocsHandler = Callable[[Sequence[QueueRow], str], Awaitable[dict[int, Outcome]]]


class LocalFilter(Protocol):
    """Sieve at local delivery (mailrelay.sieve.delivery): picks the rows it filters and
    delivers them itself (leased to `owner`); returns (rows finished, outcomes of the rows
    it did not finish) for the scheduler to notify and apply."""

    async def split(self, rows: Sequence[QueueRow]) -> tuple[list[QueueRow], list[QueueRow]]: ...
    async def deliver(self, rows: Sequence[QueueRow], owner: str
                      ) -> tuple[list[QueueRow], dict[int, Outcome]]: ...
# Called with the recipients of ONE queue id and the notice kind: "failed" | "delayed" |
# "delivered" | "relayed" (RFC 3464 §2.3.3 actions; success ones only when asked, RFC 3461).
BounceSink = Callable[[Sequence[tuple[QueueRow, Outcome]], str], Awaitable[None]]


def backoff(attempts: int, cfg: QueueConfig) -> float:
    """Seconds until the next try after `attempts` tries: initial, doubling, capped."""
    return float(min(cfg.retry_initial * (2 ** max(attempts - 1, 0)), cfg.retry_max))


class Scheduler:
    def __init__(self, pool: asyncpg.Pool, cfg: QueueConfig, book: Callable[[], AddressBook],
                 remote: RemoteTarget | None, bounce: BounceSink,
                 metrics: Metrics | None = None, batch: int = 500, *,
                 node: Node | None = None, listener: Listener | None = None) -> None:
        self.pool = pool
        self.cfg = cfg
        self.book = book
        self.remote = remote
        self.bounce = bounce
        self.docs_handler: DocsHandler | None = None
        self.sieve: LocalFilter | None = None  # set by the mail component (issue 16)
        self.metrics = metrics or Metrics()
        self.batch = batch
        # Without a node of the process (a test, a tool) the scheduler registers its own.
        self._own_node = node is None
        self.node = node or Node(pool, NodeConfig())
        self.owner = self.node.id
        self._listener = listener or Listener(pool)
        self._own_listener = listener is None
        self._wake = asyncio.Event()
        self._stopping = False
        self._active = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dest_active: dict[str, int] = defaultdict(int)
        self._main: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None
        self._held: set[int] = set()  # rows in flight, leased to us
        self._lost: set[int] = set()  # rows whose lease another node took over

    # ---- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        if self._own_node:
            await self.node.start()
        self._sub = await self._listener.subscribe("queue_ready", self._on_notify,
                                                   self._caught_up)
        self.node.add_reaper("queue entries", self._reap)
        await self.node.reap()
        loop = asyncio.get_running_loop()
        self._main = loop.create_task(self._run())
        self._renewer = loop.create_task(self._renew_loop())

    async def _reap(self, dead_seconds: float) -> int:
        async with self.pool.acquire() as conn:
            n = await repo.reclaim_expired(conn, dead_seconds)
        if n:
            self._wake.set()
        return n

    def _on_notify(self, payload: str) -> None:
        self._wake.set()

    def _caught_up(self) -> None:
        """The LISTEN connection came back: whatever was queued meanwhile is due now."""
        self._wake.set()

    def nudge(self) -> None:
        """Something was queued in this process: look now."""
        self._wake.set()

    def lease_lost(self, rows: Sequence[QueueRow]) -> bool:
        return any(r.id in self._lost for r in rows)

    async def _renew_loop(self) -> None:
        period = max(self.cfg.lease_seconds / 3, 0.5)
        while True:
            await asyncio.sleep(period)
            held = sorted(self._held - self._lost)
            if not held:
                continue
            try:
                async with self.pool.acquire() as conn:
                    kept = await repo.renew(conn, self.owner, held, self.cfg.lease_seconds)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("renewing %d queue leases failed: %s", len(held), exc)
                continue
            lost = [i for i in held if i not in kept and i in self._held]
            if lost:
                self._lost.update(lost)
                log.warning("lost the lease on %d queue entries (ids %s): another node took"
                            " them over; our attempts are abandoned", len(lost),
                            ",".join(map(str, lost[:20])))
                self.metrics.inc("mail_queue_lease_lost_total", len(lost))

    async def stop(self) -> None:
        """Stop claiming, let in-flight deliveries finish, hand back what we still hold.

        The hand-back uses a fresh pool connection; when the database is unreachable the
        rows stay leased to our node and the survivors take them once its heartbeat ages."""
        self._stopping = True
        self._wake.set()
        if self._main:
            await self._main
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=20)
        self.node.remove_reaper("queue entries")
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if self._sub is not None:
            sub, self._sub = self._sub, None
            with contextlib.suppress(Exception):
                await sub.close()
        if self._own_listener:
            await self._listener.stop()
        try:
            async with self.pool.acquire() as conn:
                n = await asyncio.wait_for(repo.release_owner(conn, self.owner), 5)
            if n:
                log.info("handed back %d queue entries", n)
        except Exception as exc:  # noqa: BLE001 - left to the heartbeat expiry
            log.warning("could not hand back queue entries (%s); other nodes take them"
                        " when this node's heartbeat ages", exc)
        if self._own_node:
            await self.node.stop()

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                claimed = await self.tick()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.error("queue scan failed: %s", exc)
                claimed = 0
                await asyncio.sleep(1)
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
        if room <= 0 or self._stopping:
            return 0
        async with self.pool.acquire() as conn:
            rows = await repo.claim(conn, self.owner, min(room, self.batch),
                                    self.cfg.lease_seconds, in_use=self._dest_active,
                                    per_destination=self.cfg.per_destination)
        if not rows:
            return 0
        self.metrics.inc("mail_queue_claimed_total", len(rows))
        by_transport: dict[str, list[QueueRow]] = defaultdict(list)
        for r in rows:
            by_transport[r.transport].append(r)
        if by_transport.get("local"):
            self._spawn(self._deliver_local(by_transport["local"]), by_transport["local"])
        if by_transport.get("docs"):
            self._spawn(self._deliver_docs(by_transport["docs"]), by_transport["docs"])
        groups: dict[tuple[int, str, str], list[QueueRow]] = defaultdict(list)
        for r in by_transport.get("remote", ()):
            groups[(r.message_id, r.sender, r.domain)].append(r)
        excess: list[int] = []
        for (_, _, domain), group in groups.items():
            # Claim only what a free slot can start now; the rest goes straight back.
            if self._dest_active[domain] >= self.cfg.per_destination:
                excess.extend(r.id for r in group)
                continue
            self._dest_active[domain] += 1
            self._spawn(self._deliver_remote(group), group, domain)
        if excess:
            async with self.pool.acquire() as conn:
                await repo.unclaim(conn, self.owner, excess)
        return len(rows) - len(excess)

    def _spawn(self, coro: Awaitable[None], rows: Sequence[QueueRow],
               domain: str | None = None) -> None:
        weight = len(rows)
        ids = [r.id for r in rows]
        self._active += weight
        self._held.update(ids)

        async def run() -> None:
            try:
                await coro
            except Exception:
                log.exception("delivery task failed")
            finally:
                self._active -= weight
                self._held.difference_update(ids)
                self._lost.difference_update(ids)
                if domain is not None:
                    self._dest_active[domain] -= 1
                    if self._dest_active[domain] <= 0:
                        del self._dest_active[domain]
                self._wake.set()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- transports ------------------------------------------------------------------
    async def _deliver_local(self, rows: Sequence[QueueRow]) -> None:
        if self.sieve is not None:  # recipients with an active Sieve script (issue 16)
            rows, filtered = await self.sieve.split(rows)
            if filtered:
                ok, failed = await self.sieve.deliver(filtered, self.owner)
                self.metrics.inc("mail_delivered_total", len(ok), transport="local")
                await self._notices([(r, Outcome("ok")) for r in ok], success=True)
                if failed:
                    await self.apply([r for r in filtered if r.id in failed], failed)
            if not rows:
                return
        async with self.pool.acquire() as conn, conn.transaction():
            # Lock our rows first: a reaper cannot hand them out while we deliver.
            mine = await repo.lock_owned(conn, self.owner, [r.id for r in rows])
            self._warn_lost([r for r in rows if r.id not in mine])
            rows = [r for r in rows if r.id in mine]
            full: set[int] = set()
            done: dict[int, int] = {}
            for folder in sorted({r.folder or "INBOX" for r in rows}):
                done.update(await repo.deliver_local(
                    conn, [(r.id, r.message_id, r.recipient, r.size) for r in rows
                           if (r.folder or "INBOX") == folder], full, folder=folder))
            ok = [r for r in rows if r.id in done]
            await repo.finish(conn, ok, "delivered", [f"local {r.folder or 'INBOX'}" for r in ok],
                              owner=self.owner)
        for r in ok:
            log.info("delivered id=%s to=<%s> transport=local", r.queue_id, r.recipient)
        self.metrics.inc("mail_delivered_total", len(ok), transport="local")
        await self._notices([(r, Outcome("ok")) for r in ok], success=True)
        # Over quota at delivery: bounced with a DSN (as Dovecot's default, quota_full_tempfail
        # = no); at DATA time a message with no other recipient was refused with 452 4.2.2.
        missing = {r.id: Outcome("perm", 552, "5.2.2", "mailbox full") if r.id in full
                   else Outcome("perm", 550, "5.1.1", "mailbox unavailable")
                   for r in rows if r.id not in done}
        if missing:
            await self.apply([r for r in rows if r.id in missing], missing)

    async def _deliver_docs(self, rows: Sequence[QueueRow]) -> None:
        if self.docs_handler is not None:
            results = await self.docs_handler(rows, self.owner)
        else:
            results = await self.docs_to_clerks(rows)
        await self.apply(rows, results)

    async def docs_to_clerks(self, rows: Sequence[QueueRow]) -> dict[int, Outcome]:
        """Document inboxes without the document handler: defer, never deliver
        unverified (issue #11, ARCHITECTURE rule 11: a missing piece of the trust path
        defers)."""
        log.warning("document handler not running: %d document rows deferred", len(rows))
        return {r.id: Outcome("temp", 451, "4.3.0", "document verification unavailable;"
                              " try again later") for r in rows}

    async def _deliver_remote(self, rows: Sequence[QueueRow]) -> None:
        first = rows[0]
        if self.remote is None:
            await self.apply(rows, {r.id: Outcome("temp", 451, "4.4.0", "no remote transport")
                                    for r in rows})
            return
        async with self.pool.acquire() as conn:
            raw = await repo.message_raw(conn, first.message_id)
        try:
            res = await self.remote.deliver(first.sender, [r.recipient for r in rows], raw,
                                            dsn=dsn_request(rows),
                                            abort=lambda: self.lease_lost(rows))
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
                                        getattr(x, "remote_mta", ""),
                                        bool(getattr(x, "dsn_passed", False)))
        await self.apply(rows, results)

    # ---- results ---------------------------------------------------------------------
    def _warn_lost(self, rows: Sequence[QueueRow]) -> None:
        for r in rows:
            log.warning("lease lost on id=%s to=<%s> (row %d): another node owns it now;"
                        " this attempt's outcome is dropped", r.queue_id, r.recipient, r.id)

    async def _record(self, rows: Sequence[QueueRow], results: dict[int, Outcome]
                      ) -> tuple[list[QueueRow], list[tuple[QueueRow, Outcome]],
                                 list[tuple[QueueRow, Outcome]]]:
        """One transaction: finish, defer or bounce each row still leased to us."""
        now = datetime.now(UTC)
        perm: list[tuple[QueueRow, Outcome]] = []
        delayed: list[tuple[QueueRow, Outcome]] = []
        async with self.pool.acquire() as conn, conn.transaction():
            mine = await repo.lock_owned(conn, self.owner, [r.id for r in rows])
            self._warn_lost([r for r in rows if r.id not in mine])
            rows = [r for r in rows if r.id in mine]
            ok = [r for r in rows if results[r.id].status == "ok"]
            if ok:
                await repo.finish(conn, ok, "delivered", [results[r.id].detail for r in ok],
                                  owner=self.owner)
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
                await repo.defer(conn, r, backoff(r.attempts, self.cfg), out.detail,
                                 owner=self.owner)
                log.info("deferred id=%s to=<%s> attempts=%d reason=%s", r.queue_id, r.recipient,
                         r.attempts, out.detail)
                self.metrics.inc("mail_deferred_total", transport=r.transport)
                if (self.cfg.delay_warning and not r.delay_notified and r.sender
                        and now - r.created_at > timedelta(seconds=self.cfg.delay_warning)
                        and notify_wants(r.notify, "DELAY")):  # RFC 3461 §4.1
                    delayed.append((r, out))
            if perm:
                await repo.finish(conn, [p[0] for p in perm], "bounced",
                                  [p[1].detail for p in perm], owner=self.owner)
            if delayed:
                await repo.mark_delay_notified(conn, [d[0].id for d in delayed])
        return ok, perm, delayed

    async def apply(self, rows: Sequence[QueueRow], results: dict[int, Outcome]) -> None:
        """Turn outcomes into deliveries, retries or bounces (only for rows still ours).

        A delivery done must be recorded: through a database outage the write is retried
        (the lease is renewed meanwhile) for up to `queue.lease_seconds`, at least a
        minute; giving up means the row is tried again later, i.e. possibly sent twice, and
        is logged as an error."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(self.cfg.lease_seconds, 60)
        delay = 0.1
        while True:
            try:
                ok, perm, delayed = await self._record(rows, results)
                break
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if loop.time() + delay > deadline:
                    log.error("could not record the outcome of %d queue entries (%s): they"
                              " will be tried again", len(rows), exc)
                    return
                log.warning("recording delivery outcomes failed (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        for r in ok:
            if r.transport != "local":
                log.info("delivered id=%s to=<%s> transport=%s", r.queue_id, r.recipient, r.transport)
                self.metrics.inc("mail_delivered_total", transport=r.transport)
        for r, out in perm:
            log.info("bounced id=%s to=<%s> reason=%s", r.queue_id, r.recipient, out.detail)
            self.metrics.inc("mail_bounced_total", transport=r.transport)
        await self._notices(perm, kind="failed")
        await self._notices(delayed, kind="delayed")
        await self._notices([(r, results[r.id]) for r in ok], success=True)

    async def _notices(self, items: Sequence[tuple[QueueRow, Outcome]], *, kind: str = "",
                       success: bool = False) -> None:
        """Send the DSNs the senders asked for (RFC 3461 §4.1 NOTIFY), one per queue id and
        kind. RFC 5321 §6.1 / RFC 3464: never a notice to the null sender."""
        by_key: dict[tuple[str, str], list[tuple[QueueRow, Outcome]]] = defaultdict(list)
        for r, out in items:
            if not r.sender:
                continue
            if success:
                # RFC 3461 §5.2.2: a next hop that took the request reports itself.
                if out.dsn_passed or not notify_wants(r.notify, "SUCCESS"):
                    continue
                k = "relayed" if r.transport == "remote" else "delivered"
            elif not notify_wants(r.notify, "FAILURE" if kind == "failed" else "DELAY"):
                continue
            else:
                k = kind
            by_key[(r.queue_id, k)].append((r, out))
        for (qid, k), group in by_key.items():
            try:
                await self.bounce(group, k)
            except Exception:
                log.exception("could not queue a %s notice for %s", k, qid)


@dataclass(frozen=True)
class DsnRequest:
    """What to pass to a next hop that offers DSN (RFC 3461 §5.2.1): per message
    ENVID and RET, per recipient NOTIFY and ORCPT (only those the sender set)."""

    envid: str | None
    ret: str | None
    notify: dict[str, str]
    orcpt: dict[str, str]


def dsn_request(rows: Sequence[QueueRow]) -> DsnRequest | None:
    first = rows[0]
    notify = {r.recipient: r.notify for r in rows if r.notify}
    orcpt = {r.recipient: r.orig_rcpt for r in rows if r.orig_rcpt}
    if not (first.envid or first.ret or notify or orcpt):
        return None
    return DsnRequest(first.envid, first.ret, notify, orcpt)
