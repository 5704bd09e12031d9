"""XMPP across nodes on one PostgreSQL (issue 14): the session registry and stanza hand-off.

The PostgreSQL-backed side of the router's sessions table. Each local bind, presence
change and unbind is written to `xmpp_sessions` (a row owned by this node) and announced
on the registry channel; every node keeps proxies (`RemoteResource`) of the other nodes'
sessions in its router, so routing stays a synchronous dict lookup.

A stanza for a proxy is queued for its node and handed over by one writer task per
process: per event-loop burst, one transaction with NOTIFYs on the target node's own
channel (items joined up to the 8,000-byte payload limit). A message also gets a row in
`xmpp_handoff` (and anything too large for a payload travels only as that row, named by
the NOTIFY): the target deletes the row once it delivered the message, and when the
target node dies the survivors' reaper hands its rows to the recipient's other sessions
or to offline storage, so a message is never lost silently. One writer and one reader
per process keep each sender → recipient pair in order (PostgreSQL delivers the NOTIFYs of
a transaction in order, and transactions in commit order).

Stream management (XEP-0198): a row placed on a resumable session is marked with the
resumption id and the stanza's stream position before the client can see it, so a client
whose node died and that asks a survivor to resume is settled exactly once by its own
count `h` (`resume_elsewhere`; the survivor answers `<failed/>`, the client binds afresh).

When a hand-off transaction fails (database away), every message in it is answered like
a message to an offline user: offline storage, or an error to the sender.

Resource conflicts (RFC 6120 §7.7.2.2) across nodes: the new session wins. The binding
node closes the old one through its proxy (a `close` item to the owner), and a node that
hears of a newer bind of a full JID it holds closes its own session with `<conflict/>`.

Rooms (XEP-0045): each room has one home node at a time, a lease row in
`xmpp_room_homes`. The home is taken by the node that first gets a stanza for a room
without a live home, which is where its first occupant's session is (locality: a room
whose members are all on one node costs no hand-off; rooms spread over the nodes as
their users do). Every node mirrors the leases (``R`` on the registry channel, re-read
after a LISTEN reconnect); a stanza for a room homed elsewhere goes to the home as an
`x` item naming the sender, and the home runs the room with a proxy of the sender, so
replies and broadcasts come back through the proxies: one room, one history, one archive.
A stanza for a room with no known home waits (in order) while this node claims the lease;
a node that becomes a room's home fires ``cluster/room/home`` (the MUC loads the room and
its occupants from PostgreSQL) before running it. When a home dies, its rooms that still
have occupants are claimed by the survivors' reapers; the occupancy rows say which
sessions were in the room, so occupants on live nodes stay without rejoining.

Rows of a dead node (by the `nodes` heartbeat) are removed by the survivors (a reaper
on `directory.nodes.Node`); the one that removed them broadcasts unavailable presence on
the vanished sessions' behalf (RFC 6121 §4.5.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any
from xml.etree.ElementTree import Element, fromstring

from cxkernel.listen import Listener, Subscription
from cxkernel.metrics import Metrics

from . import cluster_repo as repo
from .jid import JIDError, parse_jid
from .proto import ns
from .proto.errors import StanzaError, StreamError, error_reply
from .proto.serializer import to_bytes
from .router import Resource, Router, StanzaEvent

log = logging.getLogger("cxgw.xmpp.cluster")

__all__ = ["Cluster", "RemoteResource", "channel_of"]

#: NOTIFY payloads must stay under 8,000 bytes (PostgreSQL's default limit).
PAYLOAD_LIMIT = 7800
US, RS = "\x1f", "\x1e"  # field and item separators (never valid in XML 1.0 text)
SM_MOD = 1 << 32  # XEP-0198 §4: counters wrap at 2^32
ACK_POLL = 0.2    # seconds between looks at acknowledged hand-offs
CHANNEL_PREFIX = "cxgw_xmpp_"
_TAG = re.compile(r"[0-9a-f]{24}")
#: A room stanza follows at most this many stale home mirrors before the node holding
#: it asks PostgreSQL (the lease row) who the home is.
MAX_HOPS = 2


def channel_of(node_id: str) -> str:
    """The LISTEN channel of a node (an identifier: at most 63 bytes)."""
    return CHANNEL_PREFIX + hashlib.sha256(node_id.encode()).hexdigest()[:24]


def parse_stanza(data: bytes | str) -> Element:
    raw = data.encode() if isinstance(data, str) else data
    return fromstring(b'<w xmlns="jabber:client">' + raw + b"</w>")[0]


def _is_message(el: Element) -> bool:
    return el.tag == ns.MESSAGE and el.get("type", "normal") in ("normal", "chat")


class RemoteResource(Resource):
    """A session bound on another node, as this node's router sees it."""

    __slots__ = ("cluster", "node", "bound_at")
    local = False

    def __init__(self, cluster: Cluster, node: str, full: str) -> None:
        Resource.__init__(self)
        self.cluster = cluster
        self.node = node
        self.bound_at = 0.0
        self.set_jid(parse_jid(full))

    def deliver_bytes(self, data: bytes) -> None:
        self.cluster.send(self.node, self.full, data, self.cluster.router.current_origin)

    def run(self, job: Callable[[], Awaitable[object]]) -> None:
        self.cluster.spawn(job())

    def close_stream(self, error: StreamError | None) -> None:
        self.cluster.control(self.node, self.full, error.condition if error else "")


class _Out:
    """One item for another node: a stanza (or a close) for one of its sessions."""

    __slots__ = ("kind", "full", "data", "origin", "message")

    def __init__(self, kind: str, full: str, data: bytes, origin: Resource | None,
                 message: bool) -> None:
        self.kind, self.full, self.data, self.origin, self.message = (
            kind, full, data, origin, message)


class Cluster:
    """Registry writer, hand-off writer and reader, reaper of dead nodes' sessions."""

    def __init__(self, router: Router, pool: Any, node_id: str, listener: Listener,
                 dead_seconds: float, metrics: Metrics | None = None,
                 spawn: Callable[[Awaitable[Any]], None] | None = None,
                 resume_window: float = 0.0) -> None:
        self.router = router
        self.pool = pool
        self.node_id = node_id
        self.channel = channel_of(node_id)
        self.listener = listener
        self.dead_seconds = dead_seconds
        #: XEP-0198: how long a dead node's rows placed on a resumable session wait for
        #: the client's resumption attempt (xmpp.sm_resume_timeout)
        self.resume_window = resume_window
        self.metrics = metrics or Metrics()
        self._spawn = spawn
        self._out: dict[str, list[_Out]] = {}
        self._reg: list[tuple[str, Resource]] = []
        self._delete: list[int] = []
        self._done: set[int] = set()  # hand-off rows delivered, not yet deleted
        self._dropped: dict[str, list[RemoteResource]] = {}
        # XEP-0198 ledgers -> (stanza count at which it is acknowledged, hand-off row)
        self._unacked: dict[Any, deque[tuple[int, int]]] = {}
        self._ack_task: asyncio.Task[None] | None = None
        # rows placed on resumable sessions, to be marked in the next hand-off
        # transaction: (row, resumption id, stream position, ledger)
        self._marks: list[tuple[int, str, int, Any]] = []
        self._registering: dict[Resource, asyncio.Future[None]] = {}
        self._offline_notes: list[str] = []
        self._wake = asyncio.Event()
        self._inbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._subs: list[Subscription] = []
        self.handed = 0      # stanzas handed to other nodes
        self.received = 0    # stanzas taken from other nodes
        self.failed = 0      # stanzas whose hand-off failed (answered like offline)
        self.handed_batches = 0  # hand-off transactions committed
        self.room_homes: dict[str, str] = {}  # room bare JID -> home node id (mirror)
        # stanzas for a room whose home is being claimed, in arrival order
        self._claiming: dict[str, list[tuple[Element, Resource, int]]] = {}
        self._local_components: dict[str, Callable[[Element, Resource], None]] = {}
        self.metrics.gauge("xmpp_remote_sessions", lambda: float(self.remote_count()),
                           "sessions of other nodes known to this one")

    # -- life ---------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._writer()), loop.create_task(self._reader())]
        self._subs.append(await self.listener.subscribe(
            self.channel, lambda p: self._inbox.put_nowait(("h", p)), self._catch_up_own))
        self._subs.append(await self.listener.subscribe(
            repo.REGISTRY_CHANNEL, lambda p: self._inbox.put_nowait(("r", p)),
            self._reload))
        await self._reload()
        self.router.remote = self
        async with self.pool.acquire() as conn:
            self.room_homes = await repo.room_homes(conn, self.dead_seconds)
        for domain, handler in list(self.router.components.items()):
            if domain.startswith("conference."):
                self._local_components[domain] = handler
                self.router.components[domain] = functools.partial(self._component, domain)

    # -- rooms: one home node per room ------------------------------------------------------
    def _component(self, domain: str, stanza: Element, origin: Resource) -> None:
        to = stanza.get("to") or ""
        room = to.partition("/")[0]
        if "@" not in room:  # the service itself (disco, ping): answered by any node
            self._local_components[domain](stanza, origin)
            return
        if room not in self.room_homes:
            try:
                jid = parse_jid(to)
            except JIDError:  # the MUC answers jid-malformed
                self._local_components[domain](stanza, origin)
                return
            room = f"{jid.local}@{jid.domain}"
        self._room_stanza(domain, room, stanza, origin, 0)

    def _room_stanza(self, domain: str, room: str, stanza: Element, origin: Resource,
                     hops: int) -> None:
        """Run a room stanza here when this node is the room's home, else hand it to the
        home; with no known home (or after MAX_HOPS stale mirrors), claim the lease."""
        pending = self._claiming.get(room)
        if pending is not None:  # a claim is under way: keep the order
            pending.append((stanza, origin, hops))
            return
        home = self.room_homes.get(room)
        if home == self.node_id:
            self._local_components[domain](stanza, origin)
        elif home is not None and hops < MAX_HOPS:
            self._forward(home, stanza, origin, hops + 1)
        else:
            self._claiming[room] = [(stanza, origin, hops)]
            self.spawn(self.claim_room(domain, room))

    def _forward(self, home: str, stanza: Element, origin: Resource, hops: int) -> None:
        # A message to a room gets a hand-off row, deleted by the home once it ran it: a
        # home that died before (its death not yet seen here) leaves the row to the
        # survivors, who take the room over and run the message (at least once).
        node = origin.node if isinstance(origin, RemoteResource) else self.node_id
        self._out.setdefault(home, []).append(_Out(
            "x", f"{node}\x1d{origin.full}\x1d{hops}", to_bytes(stanza), origin,
            stanza.tag == ns.MESSAGE))
        self._wake.set()

    async def claim_room(self, domain: str, room: str) -> str | None:
        """Learn (or become) the home of `room`, then run or forward what waited for it."""
        self._claiming.setdefault(room, [])
        home: str | None = None
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                home = await repo.claim_room(conn, room, self.node_id, self.dead_seconds)
                if home == self.node_id and self.room_homes.get(room) != self.node_id:
                    await repo.notify(conn, repo.REGISTRY_CHANNEL,
                                      f"R{US}{self.node_id}{US}{room}")
        except Exception as exc:  # noqa: BLE001 - database away: the senders hear so
            log.warning("could not claim the home of %s: %s", room, exc)
        if home == self.node_id and self.room_homes.get(room) != self.node_id:
            try:  # the room and its occupants come from PostgreSQL before it runs here
                await self.router.bus.fire("cluster/room/home", room)
            except Exception:
                log.exception("loading room %s failed", room)
        if home is not None:
            self.room_homes[room] = home
        waiting = self._claiming.pop(room, [])
        for stanza, origin, hops in waiting:
            if home == self.node_id:
                self._local_components[domain](stanza, origin)
            elif home is not None and hops <= MAX_HOPS:  # the lease row's word: once more
                self._forward(home, stanza, origin, hops + 1)
            elif stanza.get("type") != "error":
                origin.deliver(error_reply(stanza, StanzaError(
                    "recipient-unavailable", "The room's node is unreachable")))
        return home

    def _rerun_room_message(self, sender: str, el: Element) -> None:
        """A message handed to a room's home that died before running it: to the room's
        new home (claimed now if need be), on behalf of its sender if it still lives."""
        node, _, rest = sender.partition("\x1d")
        full = rest.partition("\x1d")[0]
        origin = self.router.session(full)
        if origin is None or (origin.local and node != self.node_id) or \
                (isinstance(origin, RemoteResource) and origin.node != node):
            return  # the sender's session ended: nobody to speak for
        room = (el.get("to") or "").partition("/")[0]
        domain = self._room_domain(room)
        if domain is not None:
            self._room_stanza(domain, room, el, origin, 0)

    def _room_domain(self, room: str) -> str | None:
        domain = room.partition("@")[2]
        return domain if domain in self._local_components else None

    async def _take_over_rooms(self, dead_seconds: float) -> None:
        """Rooms whose home died and that still have occupants: claim them (each room
        goes to one survivor: the lease decides)."""
        async with self.pool.acquire() as conn:
            rooms = await repo.orphan_rooms(conn, dead_seconds)
        for room in rooms:
            domain = self._room_domain(room)
            if domain is not None and room not in self._claiming:
                home = await self.claim_room(domain, room)
                if home == self.node_id:
                    log.warning("room %s: this node is its home now", room)

    def _room_home(self, node: str, room: str) -> None:
        """Another node became the home of `room`."""
        was = self.room_homes.get(room)
        self.room_homes[room] = node
        if was == self.node_id:  # we were thought dead: the room's state is the new home's
            log.warning("room %s: taken over by %s", room, node)
            self.spawn(self.router.bus.fire("cluster/room/lost", room))

    async def stop(self) -> None:
        """Flush what is queued, leave the registry, stop listening."""
        self.router.remote = None
        # A clean stop: stream management itself hands unacknowledged stanzas on
        # (offline storage) as the sessions end, so their rows are confirmed now.
        for items in self._unacked.values():
            self._delete.extend(hid for _, hid in items)
        self._unacked.clear()
        for _ in range(3):
            if not (self._out or self._reg or self._delete):
                break
            self._wake.set()
            await asyncio.sleep(0.05)
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.close()
        self._subs.clear()
        tasks = self._tasks + ([self._ack_task] if self._ack_task is not None else [])
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._unacked.clear()
        with contextlib.suppress(Exception):
            async with self.pool.acquire() as conn, conn.transaction():
                await repo.delete_node_sessions(conn, self.node_id)
                await repo.release_rooms(conn, self.node_id)
                await repo.notify(conn, repo.REGISTRY_CHANNEL, f"d{US}{self.node_id}")

    def spawn(self, coro: Awaitable[Any]) -> None:
        if self._spawn is not None:
            self._spawn(coro)
        else:
            asyncio.ensure_future(coro)

    def remote_count(self) -> int:
        return len(self.router.proxies())

    # -- RemoteSessions (the router tells us about local sessions) ---------------------
    def bound(self, session: Resource) -> None:
        if session not in self._registering:
            self._registering[session] = asyncio.get_running_loop().create_future()
        self._reg.append(("b", session))
        self._wake.set()

    def registered(self, session: Resource) -> Awaitable[None] | None:
        """Resolved when the bind of `session` is committed and announced."""
        fut = self._registering.get(session)
        if fut is None:
            return None
        return asyncio.shield(fut)

    def stored_offline(self, bare: str) -> None:
        """A message went to offline storage: a node where `bare` became available in
        the meantime (unknown here yet) takes it out at once."""
        self._offline_notes.append(bare)
        self._wake.set()

    def changed(self, session: Resource) -> None:
        self._reg.append(("p", session))
        self._wake.set()

    def unbound(self, session: Resource) -> None:
        fut = self._registering.pop(session, None)
        if fut is not None and not fut.done():
            fut.set_result(None)
        self._reg.append(("u", session))
        self._wake.set()

    # -- sending ------------------------------------------------------------------------
    def send(self, node: str, full: str, data: bytes, origin: Resource | None) -> None:
        message = data.startswith(b"<message") and b'type="groupchat"' not in data[:400] \
            and b'type="error"' not in data[:400] and b'type="headline"' not in data[:400]
        self._out.setdefault(node, []).append(_Out("s", full, data, origin, message))
        self._wake.set()

    def control(self, node: str, full: str, condition: str) -> None:
        self._out.setdefault(node, []).append(
            _Out("c", full, condition.encode(), None, False))
        self._wake.set()

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0)  # the rest of this burst joins the transaction
            out, self._out = self._out, {}
            reg, self._reg = self._reg, []
            dels, self._delete = self._delete, []
            notes, self._offline_notes = self._offline_notes, []
            marks, self._marks = self._marks, []
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    stamps = await self._write_registry(conn, reg)
                    for node, items in out.items():
                        await self._hand_over(conn, node, items)
                    if marks:
                        await repo.mark_handoffs(conn, [m[0] for m in marks],
                                                 [m[1] for m in marks],
                                                 [m[2] for m in marks])
                    if dels:
                        await repo.delete_handoffs(conn, dels)
                    if notes:
                        await self._write_notes(conn, notes)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - database away: fall back, retry later
                log.warning("xmpp hand-off failed (%s): %d stanzas answered as offline",
                            exc, sum(len(v) for v in out.values()))
                if marks:  # delivered all the same: a resumption elsewhere may repeat them
                    log.warning("stream positions of %d hand-offs not recorded", len(marks))
                    self._release(marks)
                self._fallback(out)
                self._reg = reg + self._reg
                self._delete = dels + self._delete
                self._offline_notes = notes + self._offline_notes
                await asyncio.sleep(0.5)
                if self._reg or self._delete:
                    self._wake.set()
                continue
            self.handed_batches += 1
            self._release(marks)
            self._done.difference_update(dels)
            for session, ts in stamps:
                session.data["cluster_bound_at"] = ts
                fut = self._registering.pop(session, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)

    @staticmethod
    def _release(marks: list[tuple[int, str, int, Any]]) -> None:
        """Marks committed (or given up): their ledgers write what they held back."""
        per: dict[Any, int] = {}
        for m in marks:
            per[m[3]] = per.get(m[3], 0) + 1
        for ledger, n in per.items():
            ledger.release(n)

    async def _write_registry(self, conn: Any, reg: list[tuple[str, Resource]]
                              ) -> list[tuple[Resource, float]]:
        stamps: list[tuple[Resource, float]] = []
        items: list[str] = []
        for op, s in reg:
            presence = to_bytes(s.presence).decode() if s.presence is not None else None
            if op == "u":
                await repo.delete_session(conn, s.full, self.node_id)
                items.append(f"u{US}{self.node_id}{US}{s.full}")
                continue
            shared = self._shared(s)
            if op == "b":
                at = await repo.upsert_session(conn, s.full, s.bare, self.node_id,
                                               s.priority, s.available, presence, "active",
                                               shared)
                ts = at.timestamp()
                stamps.append((s, ts))
            else:
                if not await repo.update_session(conn, s.full, self.node_id, s.priority,
                                                 s.available, presence, "active", shared):
                    continue
                ts = float(s.data.get("cluster_bound_at", 0.0))
            pres = presence if presence is not None else ""
            if len(pres.encode()) > PAYLOAD_LIMIT // 2:
                pres = "*"  # too large for the payload: readers take it from the row
            items.append(f"b{US}{self.node_id}{US}{s.full}{US}{s.priority}{US}"
                         f"{int(s.available)}{US}{ts!r}{US}{shared}{US}{pres}")
        for payload in _chunks(items):
            await repo.notify(conn, repo.REGISTRY_CHANNEL, payload)
        return stamps

    async def _write_notes(self, conn: Any, notes: list[str]) -> None:
        items = [f"o{US}{self.node_id}{US}{bare}" for bare in dict.fromkeys(notes)]
        for payload in _chunks(items):
            await repo.notify(conn, repo.REGISTRY_CHANNEL, payload)

    def _shared(self, s: Resource) -> str:
        out = {}
        for key in self.router.shared_keys:
            v = s.data.get(key)
            if v is not None:
                out[key] = sorted(v) if isinstance(v, set | frozenset) else v
        return json.dumps(out, separators=(",", ":"), ensure_ascii=False)

    async def _hand_over(self, conn: Any, node: str, items: list[_Out]) -> None:
        entries: list[str] = []
        for it in items:
            text = it.data.decode()
            hid = ""
            big = len(it.data) > PAYLOAD_LIMIT - 200
            if it.message or big:
                hid = str(await repo.insert_handoff(conn, node, it.full, it.data))
            entries.append(f"{it.kind}{US}{it.full}{US}{hid}{US}{'' if big else text}")
        for payload in _chunks(entries):
            await repo.notify(conn, channel_of(node), payload)
        self.handed += len(items)
        self.metrics.inc("xmpp_handoffs_total", len(items))

    def _fallback(self, out: dict[str, list[_Out]]) -> None:
        """The hand-off did not commit: messages go the offline way (storage or error)."""
        for items in out.values():
            for it in items:
                if it.kind == "x" and it.origin is not None:
                    try:  # the room's home did not get it: the sender hears so
                        el = parse_stanza(it.data)
                    except Exception:  # noqa: BLE001 - our own serialisation: our bug
                        log.exception("room stanza for %s could not be re-parsed", it.full)
                        continue
                    if el.get("type") != "error":
                        it.origin.deliver(error_reply(el, StanzaError(
                            "recipient-unavailable", "The room's node is unreachable")))
                    continue
                if not it.message:
                    continue
                self.failed += 1
                origin = it.origin
                try:
                    el = parse_stanza(it.data)
                except Exception:  # noqa: BLE001 - our own serialisation: our bug, said loudly
                    log.exception("message for %s could not be re-parsed: lost", it.full)
                    continue
                bare = it.full.partition("/")[0]
                if origin is not None and origin.local:
                    origin.run(functools.partial(self.router.offline, el, origin, bare))
                else:
                    self.spawn(self._store_offline(el, bare))

    async def _store_offline(self, el: Element, bare: str) -> bool:
        try:
            stored = await self.router.bus.fire("message/offline/handle",
                                                StanzaEvent(el, None, bare))
        except StanzaError as exc:
            log.warning("message for %s neither delivered nor stored: %s", bare,
                        exc.condition)
            return False
        if stored:
            self.stored_offline(bare)
        return bool(stored)

    async def _offline_recheck(self, bare: str) -> None:
        """Another node stored a message offline for `bare`: if it is available here,
        deliver offline storage now (taken atomically: once, by one node)."""
        for r in self.router.available_resources(bare):
            if r.local and r.priority >= 0:
                from .router import SessionEvent
                await self.router.bus.fire("offline/recheck", SessionEvent(r))
                return

    # -- receiving ------------------------------------------------------------------------
    async def _reader(self) -> None:
        while True:
            kind, payload = await self._inbox.get()
            try:
                if kind == "h":
                    await self._take(payload)
                else:
                    await self._registry(payload)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("xmpp cluster: could not handle a notification")

    async def _take(self, payload: str) -> None:
        for entry in payload.split(RS):
            kind, full, hid, text = entry.split(US, 3)
            n = int(hid) if hid else 0
            if n and n in self._done:
                continue
            data = text.encode()
            if n and not text:
                async with self.pool.acquire() as conn:
                    got = await repo.fetch_handoff(conn, n)
                if got is None:
                    continue  # delivered already (a catch-up read it first)
                data = got
            placed = await self._deliver(kind, full, data, n)
            if n and placed is not False:
                self._done.add(n)
                if placed:  # None: confirmed when the client acknowledges it
                    self._delete.append(n)
                    self._wake.set()

    async def _deliver(self, kind: str, full: str, data: bytes, hid: int = 0) -> bool | None:
        """Deliver an item from another node; False when a message could not be placed
        (its row stays for a later catch-up); None when its row is to be deleted once
        the client acknowledged it (XEP-0198)."""
        self.received += 1
        if kind == "x":
            node, _, rest = full.partition("\x1d")
            full, _, hops = rest.partition("\x1d")
            origin = self.router.session(full)
            if node == self.node_id:  # back home through a stale mirror
                if origin is None or not origin.local:
                    return True  # the sender's session ended meanwhile
            elif not isinstance(origin, RemoteResource) or origin.node != node:
                origin = RemoteResource(self, node, full)  # not announced yet: transient
            el = parse_stanza(data)
            to = el.get("to") or ""
            room = to.partition("/")[0]
            domain = room.partition("@")[2]
            if domain in self._local_components:
                if "@" in room:
                    self._room_stanza(domain, room, el, origin, int(hops or 1))
                else:
                    self._local_components[domain](el, origin)
            return True
        if kind == "k":  # XEP-0198: the client resumed on another node (resume_elsewhere)
            previd, _, h = data.decode().rpartition(" ")
            await self.router.bus.fire("sm/resumed/elsewhere", (full, previd, int(h)))
            return True
        target = self.router.session(full)
        if kind == "c":
            if target is not None and target.local:
                target.data["replaced"] = True
                target.close_stream(StreamError(data.decode() or "conflict",
                                                "Replaced by new connection"))
            return True
        if target is not None and target.local:
            return self._place(target, data, hid)
        el = parse_stanza(data)
        if not _is_message(el):
            return True  # RFC 6121 §8.5.3.2: presence/iq to a gone full JID: dropped
        return await self.to_bare(full.partition("/")[0], el)

    def _place(self, target: Resource, data: bytes, hid: int) -> bool | None:
        """Put a handed-over stanza on a local session. A message to a stream-managed
        session keeps its hand-off row until the client acknowledges it (XEP-0198 §4):
        if this node dies first, the survivors place the message again, so an
        unacknowledged message is not lost with the node's memory. For a resumable
        session the row is marked with the resumption id and the stanza's stream
        position, so the client's count `h` on a later `<resume/>` elsewhere tells which
        of them it received (`resume_elsewhere`): exactly once."""
        ledger: Any = getattr(target, "sm", None)
        before = len(ledger.queue) if ledger is not None else 0
        resumable = bool(hid) and ledger is not None and bool(ledger.id)
        if resumable:
            # The client may resume on another node after this one died: the stanza's
            # position is committed (the writer's next transaction) before the client
            # can see it; until then the ledger holds its writes back (Ledger.pin).
            ledger.pin((ledger.sent + 1) % SM_MOD)
        target.deliver_bytes(data)
        queued = bool(hid) and ledger is not None and len(ledger.queue) > before and \
            ledger.queue[-1][0] is data
        if resumable:
            if queued:
                ledger.marks[-1] = ledger.sent  # (a CSI release may have gone first)
                self._marks.append((hid, ledger.id, ledger.sent, ledger))
                self._wake.set()
            else:  # held by CSI (no body): nothing to mark
                ledger.marks.pop()
                ledger.release(0)
        if queued:
            self._unacked.setdefault(ledger, deque()).append((ledger.sent, hid))
            if self._ack_task is None:
                self._ack_task = asyncio.get_running_loop().create_task(self._watch_acks())
            return None
        return True

    async def _watch_acks(self) -> None:
        """Confirm hand-off rows whose stanza the client acknowledged (or whose session
        ended and handed its unacknowledged queue on to offline storage)."""
        try:
            while self._unacked:
                await asyncio.sleep(ACK_POLL)
                self._confirm_acked()
        finally:
            self._ack_task = None

    def _confirm_acked(self) -> None:
        for ledger, items in list(self._unacked.items()):
            while items and (ledger.acked - items[0][0]) % SM_MOD < SM_MOD // 2:
                self._delete.append(items.popleft()[1])
                self._wake.set()
            if not items:
                del self._unacked[ledger]

    async def to_bare(self, bare: str, el: Element) -> bool:
        """A message whose session is gone: the account's other sessions (any node),
        else offline storage (RFC 6121 §8.5.3.2.1: treated as to the bare JID)."""
        targets = [r for r in self.router.available_resources(bare) if r.priority >= 0]
        if targets:
            data = to_bytes(el)
            for r in targets:
                r.deliver_bytes(data)
            return True
        return await self._store_offline(el, bare)

    async def _registry(self, payload: str) -> None:
        for entry in payload.split(RS):
            fields = entry.split(US)
            op, node = fields[0], fields[1]
            if node == self.node_id:
                continue
            if op == "d":
                for proxy in self._drop_node(node):
                    await self._remote_closed(proxy)
            elif op == "u":
                cur = self.router.session(fields[2])
                if isinstance(cur, RemoteResource) and cur.node == node:
                    self.router.drop_proxy(cur)
                    await self._remote_closed(cur)
            elif op == "R":
                self._room_home(node, fields[2])
            elif op == "o":
                await self._offline_recheck(fields[2])
            elif op == "b":
                full, prio, avail, ts, shared, pres = fields[2:8]
                presence: str | None = pres or None
                if pres == "*":
                    async with self.pool.acquire() as conn:
                        row = await repo.session_row(conn, full)
                    presence = row["presence"] if row is not None else None
                self._apply(node, full, int(prio), avail == "1", float(ts), presence,
                            shared)

    def _apply(self, node: str, full: str, priority: int, available: bool, ts: float,
               presence: str | None, shared: str = "{}") -> None:
        cur = self.router.session(full)
        if cur is not None and cur.local:
            mine = cur.data.get("cluster_bound_at")
            if mine is not None and mine >= ts:
                return  # ours is the newer bind: the other node hears our close
            # RFC 6120 §7.7.2.2: the new session (on another node) wins.
            cur.data["replaced"] = True
            cur.close_stream(StreamError("conflict", "Replaced by new connection"))
            self.router.drop_proxy(cur)  # in case it lingers (stream management)
            cur = None
        if not isinstance(cur, RemoteResource) or cur.node != node:
            if isinstance(cur, RemoteResource):
                self.router.drop_proxy(cur)
            cur = RemoteResource(self, node, full)
            self.router.put_proxy(cur)
        cur.priority, cur.available, cur.bound_at = priority, available, ts
        try:
            cur.data = {k: frozenset(v) if isinstance(v, list) else v
                        for k, v in json.loads(shared or "{}").items()}
        except ValueError:
            log.warning("unreadable shared state of %s in the registry", full)
        cur.presence = None
        if presence:
            try:
                cur.presence = parse_stanza(presence)
            except Exception:  # noqa: BLE001 - written by a node of ours
                log.warning("unreadable presence of %s in the registry", full)

    async def _remote_closed(self, proxy: RemoteResource) -> None:
        """Another node's session ended: what this node holds for it goes (room occupancy
        at the rooms' home)."""
        from .router import SessionEvent
        await self.router.bus.fire("session/remote/closed", SessionEvent(proxy))

    def _drop_node(self, node: str) -> list[RemoteResource]:
        for room, home in list(self.room_homes.items()):
            if home == node:  # its rooms get a home again (claimed) when next used
                del self.room_homes[room]
        gone = [r for r in self.router.proxies(node) if isinstance(r, RemoteResource)]
        for r in gone:
            self.router.drop_proxy(r)
        if gone:
            self._dropped[node] = gone  # for the reaper, if the notice came first
        return gone

    async def _reload(self) -> None:
        """Rebuild the proxies from the registry (at start and after a LISTEN reconnect:
        whatever was announced meanwhile is found by looking again)."""
        async with self.pool.acquire() as conn:
            rows = await repo.live_sessions(conn, self.node_id, self.dead_seconds)
        seen = set()
        for row in rows:
            seen.add(row["full_jid"])
            self._apply(row["node_id"], row["full_jid"], row["priority"], row["available"],
                        row["bound_at"].timestamp(), row["presence"], row["shared"])
        for r in self.router.proxies():
            if isinstance(r, RemoteResource) and r.full not in seen:
                self.router.drop_proxy(r)

    async def _catch_up_own(self) -> None:
        """After a LISTEN reconnect: hand-off rows addressed to us that we missed."""
        async with self.pool.acquire() as conn:
            rows = await repo.pending_handoffs(conn, self.node_id)
        for row in rows:
            if row["id"] in self._done:
                continue
            kind = "x" if "\x1d" in row["full_jid"] else "s"
            placed = await self._deliver(kind, row["full_jid"], bytes(row["stanza"]),
                                         row["id"])
            if placed is not False:
                self._done.add(row["id"])
                if placed:
                    self._delete.append(row["id"])
        self._wake.set()

    # -- dead nodes ---------------------------------------------------------------------------
    async def reap(self, dead_seconds: float) -> int:
        """Node reaper: remove dead nodes' sessions (announcing unavailable presence on
        their behalf) and place the messages that were handed to them."""
        async with self.pool.acquire() as conn, conn.transaction():
            gone = await repo.reap_sessions(conn, dead_seconds)
            for node in sorted({n for n, _ in gone}):
                await repo.notify(conn, repo.REGISTRY_CHANNEL, f"d{US}{node}")
        n = len(gone)
        for node in sorted({n for n, _ in gone}):
            for proxy in self._drop_node(node) or self._dropped.pop(node, []):
                await self._remote_closed(proxy)
                if proxy.available:
                    # RFC 6121 §4.5.2: unavailable on behalf of a session that vanished.
                    el = Element(ns.PRESENCE, {"type": "unavailable", "from": proxy.full})
                    await self.router.bus.fire("presence/broadcast",
                                               StanzaEvent(el, proxy, proxy.bare))
        n += await self._place_dead(dead_seconds)
        await self._take_over_rooms(dead_seconds)
        return n

    async def _place_dead(self, dead_seconds: float) -> int:
        """Place the messages handed to dead nodes: the account's other sessions, else
        offline storage (rows of a resumable session wait for its resumption attempt)."""
        n = 0
        while True:
            async with self.pool.acquire() as conn, conn.transaction():
                rows = await repo.dead_handoffs(conn, dead_seconds, self.resume_window)
                if not rows:
                    break
                placed = []
                for row in rows:
                    try:
                        el = parse_stanza(bytes(row["stanza"]))
                    except Exception:  # noqa: BLE001 - written by a node of ours: our bug
                        log.exception("hand-off %s for %s could not be re-parsed: dropped",
                                      row["id"], row["full_jid"])
                        placed.append(row["id"])
                        continue
                    if "\x1d" in row["full_jid"]:  # a room message its home never ran
                        self._rerun_room_message(row["full_jid"], el)
                        placed.append(row["id"])
                    elif not _is_message(el) or \
                            await self.to_bare(row["full_jid"].partition("/")[0], el):
                        placed.append(row["id"])
                await repo.delete_handoffs(conn, placed)
                n += len(placed)
                if len(placed) < len(rows):
                    break  # storage refuses now: the rest waits for the next heartbeat
        return n

    # -- XEP-0198 resumption of another node's session ----------------------------------
    def resume_tag(self) -> str:
        return self.channel[len(CHANNEL_PREFIX):]

    async def resume_elsewhere(self, previd: str, owner: str, h: int) -> None:
        """A client of `owner` asks to resume `previd`, not held here, having received
        `h` stanzas (XEP-0198 §5). In one transaction: the hand-off rows it received are
        deleted, the others released to the ordinary rules, and the owning node (named in
        the id) is told to end the session if it still holds it (it hands the rest on to
        offline storage). If the owner is dead, the released rows are placed at once
        (offline, or the account's sessions): each message exactly once."""
        tag = previd.rpartition(".")[2]
        async with self.pool.acquire() as conn, conn.transaction():
            dropped, released = await repo.settle_resume(conn, previd, owner, h)
            if _TAG.fullmatch(tag) and tag != self.resume_tag():
                await repo.notify(conn, CHANNEL_PREFIX + tag,
                                  f"k{US}{owner}{US}{US}{previd} {h}")
        log.info("resumption %s of %s settled elsewhere: %d received, %d to place",
                 previd, owner, dropped, released)
        if released:
            await self._place_dead(self.dead_seconds)


def _chunks(entries: list[str]) -> list[str]:
    """Join entries into payloads under PAYLOAD_LIMIT bytes (each entry fits alone)."""
    out: list[str] = []
    cur: list[str] = []
    size = 0
    for e in entries:
        n = len(e.encode()) + 1
        if cur and size + n > PAYLOAD_LIMIT:
            out.append(RS.join(cur))
            cur, size = [], 0
        cur.append(e)
        size += n
    if cur:
        out.append(RS.join(cur))
    return out

