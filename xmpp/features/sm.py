"""Stream Management (XEP-0198, ``urn:xmpp:sm:3``): acks and resumption.

``Ledger`` is the pure part: the count of stanzas handled from the client, the count the
client acknowledged, and the stanzas sent but not yet acknowledged, all modulo 2^32
(XEP-0198 §4). The driver (``xmpp.server``) hands every stanza leaving for a session with
a ledger to ``Ledger.sent`` (after CSI) and counts the client's stanzas; the ledger writes
to whichever connection carries the session now (none while it hibernates).

Lifecycle:

- ``<enable resume='true'/>`` after bind: a ledger with a resumption id; ``<enabled/>``.
- The TCP connection drops without ``</stream>`` (the ``c2s/hibernate`` hook): the session
  stays bound and available and keeps queueing for ``xmpp.sm_resume_timeout`` seconds.
- ``<resume previd h/>`` on a new authenticated stream of the same account: the new
  connection takes the session over, stanzas after ``h`` are sent again, ``<resumed/>``.
- The same on another node (issue 14; the id ends in the owning node's channel tag): the
  cluster settles what the client received from the persisted hand-offs and tells the
  owner, which ends the session here (``sm/resumed/elsewhere``); the client gets
  ``<failed/>``, binds afresh and gets the rest once (``Cluster.resume_elsewhere``).
- Otherwise the session ends (timeout, clean close, conflict, shutdown): on
  ``session/closed`` its unacknowledged stanzas are handed on, once, so nothing is lost
  and nothing is doubled:
  messages with a body go to offline storage (``message/offline/handle``, which keeps
  the XEP-0359 stanza-id and the original delay stamp) unless another resource of the
  account got the same message directly or as a carbon when it was routed; carbon copies,
  archive results, groupchat, chat states, presence and iq results are dropped (the
  original, the archive or the room has them); iq requests are answered with
  ``recipient-unavailable``. Resends are bytes already routed, so MAM never archives
  them twice.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import secrets
from collections import deque
from typing import Any
from xml.etree.ElementTree import Element, fromstring

from ..host import Host
from ..proto import ns
from ..proto.errors import StanzaError, StreamError, error_reply
from ..proto.serializer import to_bytes
from ..router import Resource, SessionEvent, StanzaEvent

log = logging.getLogger("cxgw.xmpp.sm")

NS = ns.SM
MOD = 1 << 32                  # XEP-0198 §4: counters wrap at 2^32
R = to_bytes(Element(f"{{{NS}}}r"))
CARBONS = "urn:xmpp:carbons:2"
BODY = ns.q(ns.CLIENT, "body")
MAX_ID = 100  # longest resumption id settled with another node (ours are 49 characters)


class HandledTooHigh(ValueError):
    """The peer acknowledged more stanzas than were sent (XEP-0198 §4)."""


class Ledger:
    """Counters and unacknowledged stanzas of one stream-managed session."""

    __slots__ = ("id", "owner", "handled", "acked", "queue", "requested", "conn",
                 "holder", "timer", "held", "held_conn", "marks")

    def __init__(self, owner: str, id_: str = "") -> None:
        self.id = id_            # resumption id ("" : not resumable)
        self.owner = owner       # bare JID allowed to resume
        self.handled = 0         # stanzas handled from the client, mod 2^32
        self.acked = 0           # stanzas the client acknowledged, mod 2^32
        #: sent, not yet acknowledged: (bytes, also reached another resource of the account)
        self.queue: deque[tuple[bytes, bool]] = deque()
        self.requested = False   # an <r/> is outstanding
        self.conn: Any = None    # the live connection carrying the session, None: hibernating
        self.holder: Any = None  # the session object in the sessions table
        self.timer: asyncio.TimerHandle | None = None
        #: while pinned: (stream position, bytes) counted and queued, not written yet
        self.held: deque[tuple[int, bytes]] | None = None
        self.held_conn: Any = None
        self.marks: deque[int] = deque()  # positions whose durable mark is not committed

    def pin(self, seq: int) -> None:
        """The stanza at position `seq` may be written only once the cluster committed
        its mark (its position, for a resumption on another node): until then stanzas
        are counted and queued as usual but held back, in order (see `release`)."""
        if self.held is None:
            self.held = deque()
            self.held_conn = self.conn
        self.marks.append(seq)

    def release(self, n: int) -> None:
        """The oldest `n` marks are committed: write what is held up to the next mark
        still pending. If the session moved meanwhile (resumed on another connection:
        the whole queue was sent again there) or hibernates, held bytes are already in
        the queue: dropped here."""
        marks, held = self.marks, self.held
        for _ in range(min(n, len(marks))):
            marks.popleft()
        if held is None:
            return
        out = []
        while held and (not marks or 0 < (marks[0] - held[0][0]) % MOD < MOD // 2):
            out.append(held.popleft()[1])
        conn = self.held_conn
        if out and conn is not None and conn is self.conn:
            conn.put(b"".join(out))
        if not held and not marks:
            self.held = self.held_conn = None

    @property
    def sent(self) -> int:
        return (self.acked + len(self.queue)) % MOD

    def received(self) -> None:
        self.handled = (self.handled + 1) % MOD

    def sent_stanza(self, data: bytes) -> bytes:
        """Keep `data` until acknowledged; the bytes to write (with an ack request
        when none is outstanding)."""
        self.queue.append((data, False))
        if self.requested:
            return data
        self.requested = True
        return data + R

    def mark_elsewhere(self) -> None:
        """The last stanza also reached another resource of the account."""
        if self.queue:
            self.queue[-1] = (self.queue[-1][0], True)

    def ack(self, h: int) -> int:
        """The client has handled `h` stanzas in all; drop those from the queue.
        Returns how many were newly acknowledged."""
        n = (h - self.acked) % MOD
        if n > len(self.queue):
            raise HandledTooHigh(f"h={h} but only {self.sent} sent")
        for _ in range(n):
            self.queue.popleft()
        self.acked = h % MOD
        self.requested = False
        return n

    def take(self) -> list[tuple[bytes, bool]]:
        out = list(self.queue)
        self.acked = self.sent
        self.queue.clear()
        return out


_HEAD = re.compile(rb"^\s*<(message|presence|iq)\b([^>]*)>")
_ATTR = re.compile(rb"""\s([a-z]+)=(?:'([^']*)'|"([^"]*)")""")


def _head_only(data: bytes) -> Element | None:
    """The stanza's name and from/to/id/type from its start tag (for an error reply)."""
    m = _HEAD.match(data)
    if m is None:
        return None
    el = Element(ns.q(ns.CLIENT, m.group(1).decode()))
    for a in _ATTR.finditer(m.group(2)):
        name = a.group(1).decode()
        if name in ("from", "to", "id", "type"):
            el.set(name, (a.group(2) if a.group(2) is not None else a.group(3) or b"")
                   .decode("utf-8", "replace"))
    return el


def _nonza(name: str, **attrs: str) -> bytes:
    return to_bytes(Element(f"{{{NS}}}{name}", attrs))


def _failed(condition: str, h: int | None = None) -> bytes:
    el = Element(f"{{{NS}}}failed", {"h": str(h)} if h is not None else {})
    el.append(Element(f"{{{ns.STANZA_ERRORS}}}{condition}"))
    return to_bytes(el)


def _parse_h(el: Element) -> int | None:
    try:
        h = int(el.get("h", ""))
    except ValueError:
        return None
    return h if 0 <= h < MOD else None


class StreamManagement:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.resumable: dict[str, Ledger] = {}

    def timeout(self) -> float:
        return float(self.host.cfg.sm_resume_timeout)

    # -- nonzas (the c2s/nonza hook) ---------------------------------------------------------

    def on_nonza(self, el: Element, conn: Any) -> bool | None:
        tag = el.tag
        if not tag.startswith("{" + NS + "}"):
            return None
        name = tag[len(NS) + 2:]
        ledger: Ledger | None = conn.sm
        if name == "r":
            if ledger is not None:
                conn.write_raw(_nonza("a", h=str(ledger.handled)))
        elif name == "a":
            h = _parse_h(el)
            if ledger is not None and h is not None:
                try:
                    ledger.ack(h)
                except HandledTooHigh:
                    # XEP-0198 §4: an undefined-condition stream error with the reason.
                    conn.close_stream(StreamError("undefined-condition", "h too high"))
                    return True
                if ledger.queue and ledger.conn is conn:
                    ledger.requested = True
                    conn.write_raw(R)
        elif name == "enable":
            self._enable(el, conn)
        elif name == "resume":
            self._resume(el, conn)
        return True

    def _enable(self, el: Element, conn: Any) -> None:
        if conn.sm is not None or not conn.bound:
            conn.write_raw(_failed("unexpected-request"))  # XEP-0198 §3
            return
        resume = el.get("resume") in ("true", "1")
        rid = ""
        if resume:
            # The id names the owning node (its channel tag), so another node that gets
            # the <resume/> after this one died or lost the client can settle it.
            remote = self.host.router.remote
            tag = remote.resume_tag() if remote is not None else ""
            rid = secrets.token_urlsafe(18) + (f".{tag}" if tag else "")
        ledger = Ledger(conn.bare, rid)
        ledger.conn = ledger.holder = conn
        conn.sm = ledger
        attrs = {"id": ledger.id, "resume": "true",
                 "max": str(int(self.timeout()))} if resume else {}
        if resume:
            self.resumable[ledger.id] = ledger
        conn.write_raw(_nonza("enabled", **attrs))

    def _resume(self, el: Element, conn: Any) -> None:
        h = _parse_h(el)
        ledger = self.resumable.get(el.get("previd", ""))
        owner = f"{conn.session.username}@{self.host.domain}"
        if conn.bound or conn.sm is not None or h is None:
            conn.write_raw(_failed("unexpected-request"))
            return
        if ledger is None:
            remote = self.host.router.remote
            previd = el.get("previd", "")
            if remote is not None and 0 < len(previd) <= MAX_ID and conn.session.username:
                conn.run(functools.partial(self._resume_elsewhere, remote, previd, owner,
                                           h, conn))
                return
        if ledger is None or ledger.owner != owner:
            conn.write_raw(_failed("item-not-found"))  # XEP-0198 §5: unknown or expired
            return
        if ledger.conn is not None:
            # The old connection is not known to be dead yet (a half-open TCP): end it
            # now and let it hibernate, then take over.
            ledger.conn.abandon()
        if ledger.timer is not None:
            ledger.timer.cancel()
            ledger.timer = None
        try:
            ledger.ack(h)
        except HandledTooHigh:
            conn.write_raw(_failed("undefined-condition", ledger.handled))
            return
        conn.take_over(ledger.holder)
        ledger.conn = ledger.holder = conn
        conn.write_raw(_nonza("resumed", previd=ledger.id, h=str(ledger.handled)))
        if ledger.queue:
            conn.write_raw(b"".join(data for data, _ in ledger.queue) + R)
            ledger.requested = True
        if ledger.held is not None:  # held back by the cluster: just resent with the queue
            ledger.held.clear()
            ledger.held_conn = conn
        log.debug("%s resumed with %d stanzas resent", conn.full, len(ledger.queue))

    async def _resume_elsewhere(self, remote: Any, previd: str, owner: str, h: int,
                                conn: Any) -> None:
        """The session is not on this node (its node died, or holds it still): settle
        what the client received (`h`) with the persisted hand-offs and the owner node,
        then fail the resumption (XEP-0198 §5); the client binds afresh and gets the
        rest once (live, or from offline storage)."""
        try:
            await remote.resume_elsewhere(previd, owner, h)
        except Exception as exc:  # noqa: BLE001 - database away: the resume window decides
            log.warning("resumption of %s by %s not settled: %s", previd, owner, exc)
        conn.write_raw(_failed("item-not-found"))

    async def on_resumed_elsewhere(self, ev: tuple[str, str, int]) -> None:
        """The client of `previd` resumed on another node, having received `h` stanzas:
        end the session here; its unacknowledged stanzas are handed on (offline)."""
        owner, previd, h = ev
        ledger = self.resumable.get(previd)
        if ledger is None or ledger.owner != owner:
            return None
        try:
            ledger.ack(h)
        except HandledTooHigh:
            log.info("%s resumed elsewhere with h=%d beyond %d sent", owner, h, ledger.sent)
        if ledger.conn is not None:
            ledger.conn.abandon()  # a half-open TCP: the client is gone from it
        if ledger.timer is not None:
            ledger.timer.cancel()
            ledger.timer = None
        self.expire(ledger)
        return None

    # -- hibernation and the end of a session -----------------------------------------------

    def on_hibernate(self, conn: Any) -> bool | None:
        """The connection dropped without closing the stream: keep the session."""
        ledger: Ledger | None = conn.sm
        if ledger is None or not ledger.id or ledger.id not in self.resumable:
            return None
        if ledger.conn is None:
            return True  # already hibernating
        ledger.conn = None
        ledger.requested = False
        loop = asyncio.get_running_loop()
        ledger.timer = loop.call_later(self.timeout(), self.expire, ledger)
        return True

    def expire(self, ledger: Ledger) -> None:
        ledger.timer = None
        self.resumable.pop(ledger.id, None)
        if ledger.conn is None and ledger.holder is not None:
            ledger.holder.release()  # unbind; session/closed hands the queue on

    async def on_closed(self, ev: SessionEvent) -> None:
        ledger: Ledger | None = getattr(ev.session, "sm", None)
        if ledger is None or ledger.holder is not ev.session:
            return None
        self.resumable.pop(ledger.id, None)
        if ledger.timer is not None:
            ledger.timer.cancel()
            ledger.timer = None
        for data, elsewhere in ledger.take():
            await self._hand_on(data, elsewhere, ev.session)
        return None

    async def _hand_on(self, data: bytes, elsewhere: bool, session: Resource) -> None:
        try:
            el = fromstring(b'<w xmlns="jabber:client">' + data + b"</w>")[0]
        except Exception:
            # Never dropped without an error (issue 13): answer the sender from what the
            # start tag still says.
            head = _head_only(data)
            log.warning("unacked stanza of %s could not be re-parsed; its sender gets an"
                        " error", session.bare)
            if head is not None:
                self._bounce(head, StanzaError("internal-server-error", type="wait"))
            return
        kind = el.tag
        if kind == ns.IQ and el.get("type") in ("get", "set"):
            self._bounce(el, StanzaError("recipient-unavailable"))
            return
        if kind != ns.MESSAGE or elsewhere or el.find(BODY) is None:
            return
        if el.get("type", "normal") not in ("chat", "normal"):
            return  # groupchat is in the room's history, errors and headlines are not kept
        for child in el:
            if child.tag.startswith("{" + CARBONS + "}") or child.tag.startswith("{urn:xmpp:mam:"):
                return  # a copy: the original is delivered or archived elsewhere
        el.set("to", session.bare)
        try:
            stored = await self.host.bus.fire("message/offline/handle",
                                              StanzaEvent(el, session, session.bare))
        except StanzaError as exc:  # storage away past the outage budget: say so
            self._bounce(el, exc)
            return
        if not stored:
            self._bounce(el, StanzaError("recipient-unavailable"))

    def _bounce(self, el: Element, error: StanzaError) -> None:
        sender = el.get("from")
        if not sender or el.get("type") == "error":
            return
        reply = error_reply(el, error)
        router = self.host.router
        if "/" in sender:
            router.to_full(sender, reply)
        else:
            router.to_available(sender, reply)

    # -- the elsewhere mark (message/routed) ----------------------------------------------

    def on_routed(self, stanza: Element, origin: Resource, to_bare: str,
                  delivered: list[Resource]) -> None:
        if not delivered:
            return None
        managed = [r for r in delivered if getattr(r, "sm", None) is not None]
        if not managed:
            return None
        for r in managed:
            others = [o for o in self.host.router.resources(to_bare) if o is not r]
            # Another resource had it directly, or as a carbon copy (XEP-0280 ``carbons``
            # flag in the session data: the carbons module sends 'received' copies).
            if any(o in delivered or o.data.get("carbons") for o in others):
                r.sm.mark_elsewhere()  # type: ignore[attr-defined]
        return None

    async def stop(self) -> None:
        """Shutdown: hibernating sessions end now, their queues go to offline storage."""
        holders = []
        for ledger in list(self.resumable.values()):
            if ledger.conn is None and ledger.holder is not None:
                if ledger.timer is not None:
                    ledger.timer.cancel()
                self.expire(ledger)
                holders.append(ledger.holder)
        tasks = [h.lane_task for h in holders if getattr(h, "lane_task", None) is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)


def register(host: Host) -> StreamManagement:
    sm = StreamManagement(host)
    host.hooks.on("c2s/nonza", sm.on_nonza)
    host.hooks.on("c2s/hibernate", sm.on_hibernate)
    host.hooks.on("message/routed", sm.on_routed, priority=-50)  # after carbons
    host.bus.on("session/closed", sm.on_closed, priority=50)
    host.bus.on("sm/resumed/elsewhere", sm.on_resumed_elsewhere)
    host.on_stop(sm.stop)
    host.stream_features.add("sm")
    return sm
