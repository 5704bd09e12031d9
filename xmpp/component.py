"""External components (XEP-0114 Jabber Component Protocol): a listener where a gateway
or bot connects, proves it knows its domain's shared secret, and then exchanges stanzas
for that domain through the router.

``ComponentStream`` is the sans-IO core: bytes in, events out (``Bound`` once the
handshake — hex SHA-1 of stream id + secret, XEP-0114 §3 — checks out, then ``Stanza``
for each stanza, already moved to ``jabber:client`` and with a 'from' in the component's
domain, §3.1), bytes out with ``data_to_send()``. ``ComponentServer`` is the asyncio
driver: one ``ComponentConnection`` (a router ``Resource``) per TCP connection; once bound
it is ``Router.components[domain]``, so every stanza to that domain is written to it, and
its stanzas are routed like a client's (to local users, the server, other components).

One connection per domain: a second one gets ``conflict``. Plain TCP on loopback by
default (XEP-0114 has no TLS); the secrets come from configuration.

Limits: before the handshake the current element may hold at most
``xmpp.max_unauth_stanza_size`` bytes, after it ``MAX_STANZA`` (the parser counts the
start tag too); input is rate-limited per connection (``xmpp.component_rate_bytes_per_s``,
reading pauses above it). A failed handshake is one INFO line and a penalty for the peer
address (Dovecot's auth penalty): its next handshake is checked only after
``xmpp.component_auth_delay`` seconds, doubled per failure in a row (at most 60 s), so a
secret cannot be guessed at wire speed, even over many parallel connections.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from cxkernel.limiter import ConnectionLimiter, ListenerLimits, Ticket, peer_ip

from .host import Host
from .jid import JIDError, parse_jid
from .proto import ns
from .proto.errors import StanzaError, StreamError, error_reply
from .proto.events import StanzaReceived, StreamClosed, StreamFailed, StreamOpened
from .proto.parser import StreamParser
from .proto.serializer import STREAM_CLOSE, stream_header, to_bytes
from .router import Resource

log = logging.getLogger("cxgw.xmpp.component")

COMPONENT_NS = "jabber:component:accept"
HANDSHAKE = ns.q(COMPONENT_NS, "handshake")
MAX_STANZA = 262144
MAX_UNAUTH_STANZA = 10000
HANDSHAKE_TIMEOUT = 30.0
MAX_PENALTY = 60.0
PENALTY_TABLE = 10000  # peer addresses remembered (oldest forgotten first)


@dataclass(frozen=True, slots=True)
class Bound:
    domain: str


@dataclass(frozen=True, slots=True, eq=False)
class Stanza:
    element: Element


@dataclass(frozen=True, slots=True)
class Closed:
    pass


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    domain: str


Event = Bound | Stanza | Closed | HandshakeFailed


def handshake_digest(stream_id: str, secret: str) -> str:
    """XEP-0114 §3: lower-case hex SHA-1 of the stream id followed by the secret."""
    return hashlib.sha1((stream_id + secret).encode("utf-8")).hexdigest()


def _to_client_ns(el: Element) -> None:
    """Move elements of the component namespace to ``jabber:client`` (same stanzas)."""
    prefix = "{" + COMPONENT_NS + "}"
    for node in el.iter():
        if node.tag.startswith(prefix):
            node.tag = "{" + ns.CLIENT + "}" + node.tag[len(prefix):]


class ComponentStream:
    """Server side of one component stream. `secrets` maps domain → shared secret;
    `taken(domain)` tells whether that domain is already connected."""

    def __init__(self, secrets_: dict[str, str], taken: Callable[[str], bool], *,
                 stream_id: str, max_unauth_stanza: int = MAX_UNAUTH_STANZA) -> None:
        self.secrets = secrets_
        self.taken = taken
        # Small until the handshake succeeds; the start tag counts (parser docstring).
        self.parser = StreamParser(content_ns=COMPONENT_NS, max_stanza_bytes=max_unauth_stanza)
        self.stream_id = stream_id
        self.domain = ""
        self.bound = False
        self.closed = False
        self._out: list[bytes] = []
        self._events: deque[Event] = deque()

    def data_to_send(self) -> bytes:
        out, self._out = b"".join(self._out), []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def close(self, error: StreamError | None = None) -> None:
        if self.closed:
            return
        if error is not None:
            self._out.append(to_bytes(error.to_element()))
        self._out.append(STREAM_CLOSE)
        self.closed = True
        self._events.append(Closed())

    def receive_data(self, data: bytes) -> None:
        if self.closed:
            return
        if not data:
            self.close()
            return
        for ev in self.parser.feed(data):
            if self.closed:
                return
            if isinstance(ev, StreamOpened):
                self._opened(ev)
            elif isinstance(ev, StanzaReceived):
                self._element(ev.element)
            elif isinstance(ev, StreamClosed):
                self.close()
            elif isinstance(ev, StreamFailed):
                self._header_if_needed()
                self.close(ev.error)

    def _header_if_needed(self) -> None:
        if not self.domain:
            self._out.append(stream_header(id=self.stream_id, version=None,
                                           content_ns=COMPONENT_NS))

    def _opened(self, ev: StreamOpened) -> None:
        domain = (ev.to or "").lower()
        self._out.append(stream_header(from_=domain or None, id=self.stream_id, version=None,
                                       content_ns=COMPONENT_NS))
        if domain not in self.secrets:
            self.domain = domain or "?"
            self.close(StreamError("host-unknown"))
            return
        self.domain = domain

    def _element(self, el: Element) -> None:
        if not self.bound:
            if el.tag != HANDSHAKE:
                self.close(StreamError("not-authorized"))
                return
            want = handshake_digest(self.stream_id, self.secrets[self.domain])
            if not hmac.compare_digest((el.text or "").strip().lower().encode(), want.encode()):
                self._events.append(HandshakeFailed(self.domain))
                self.close(StreamError("not-authorized"))
                return
            if self.taken(self.domain):
                self.close(StreamError("conflict", "Domain already connected"))
                return
            self.bound = True
            self.parser.max_stanza_bytes = MAX_STANZA
            self._out.append(b"<handshake/>")
            self._events.append(Bound(self.domain))
            return
        _to_client_ns(el)
        if el.tag not in ns.STANZA_TAGS:
            self.close(StreamError("unsupported-stanza-type"))
            return
        try:
            sender = parse_jid(el.get("from") or "")
        except JIDError:
            self.close(StreamError("invalid-from"))
            return
        if sender.domain != self.domain:
            self.close(StreamError("invalid-from"))  # XEP-0114 §3.1: only its own domain
            return
        el.set("from", str(sender))
        to = el.get("to")
        if not to:
            if el.get("type") != "error":
                self._out.append(to_bytes(error_reply(el, StanzaError("bad-request"))))
            return
        try:
            el.set("to", str(parse_jid(to)))
        except JIDError:
            if el.get("type") != "error":
                self._out.append(to_bytes(error_reply(el, StanzaError("jid-malformed"))))
            return
        self._events.append(Stanza(el))


class ComponentServer:
    """The XEP-0114 listener and its live connections."""

    def __init__(self, host: Host, secrets_: dict[str, str],
                 limiter: ConnectionLimiter | None = None, *, rate: int = 1 << 20,
                 auth_delay: float = 1.0, max_unauth_stanza: int = MAX_UNAUTH_STANZA) -> None:
        self.host = host
        #: caps and the handshake deadline of the listener (cxkernel.limiter)
        self.limiter = limiter or ConnectionLimiter("xmpp_component", ListenerLimits(50, 20, 10))
        self.secrets = {d.lower(): s for d, s in secrets_.items()}
        self.rate = rate
        self.auth_delay = auth_delay
        self.max_unauth_stanza = max_unauth_stanza
        self.connections: set[ComponentConnection] = set()
        self._server: asyncio.base_events.Server | None = None
        # peer address -> (failures in a row, monotonic time before which no handshake of
        # that address is checked); bounded, oldest first out.
        self.penalties: OrderedDict[str, tuple[int, float]] = OrderedDict()

    async def listen(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        # Accept path: one ComponentConnection per TCP connection (connection_made is where
        # a connection limiter check goes).
        self._server = await loop.create_server(lambda: ComponentConnection(self), host, port)
        return int(self._server.sockets[0].getsockname()[1])

    # -- handshake penalty (per peer address) -------------------------------------------------

    def check_slot(self, addr: str) -> float:
        """Seconds until a handshake from `addr` may be checked; reserves that slot, so
        parallel connections from one address are checked one penalty apart."""
        entry = self.penalties.get(addr)
        if entry is None or entry[0] == 0:
            return 0.0
        failures, not_before = entry
        now = time.monotonic()
        slot = max(now, not_before)
        self.penalties[addr] = (failures, slot + self._delay(failures))
        return slot - now

    def _delay(self, failures: int) -> float:
        return min(MAX_PENALTY, self.auth_delay * 2 ** max(0, failures - 1))

    def failed(self, addr: str, domain: str) -> None:
        failures = self.penalties.get(addr, (0, 0.0))[0] + 1
        self.penalties[addr] = (failures, time.monotonic() + self._delay(failures))
        self.penalties.move_to_end(addr)
        while len(self.penalties) > PENALTY_TABLE:
            self.penalties.popitem(last=False)
        log.info("component handshake failed for %s from %s (%d in a row)",
                 domain, addr, failures)

    def succeeded(self, addr: str) -> None:
        self.penalties.pop(addr, None)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close_stream(StreamError("system-shutdown"))
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None


class ComponentConnection(asyncio.Protocol, Resource):
    """One component: transport ↔ ComponentStream ↔ Router."""

    def __init__(self, server: ComponentServer) -> None:
        Resource.__init__(self)
        self.server = server
        self.router = server.host.router
        self.stream = ComponentStream(server.secrets, self._taken,
                                      stream_id=secrets.token_hex(8),
                                      max_unauth_stanza=server.max_unauth_stanza)
        self.transport: asyncio.Transport | None = None
        self.addr = ""
        self.tokens = float(server.rate)  # rate limit: a token bucket of one second
        self.t_last = 0.0
        self.held: list[bytes] | None = None  # input waiting (rate limit or penalty)
        self.lane: deque[Callable[[], Awaitable[object]]] = deque()
        self.lane_task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.ticket: Ticket | None = None

    def _taken(self, domain: str) -> bool:
        return domain in self.router.components or domain == self.router.domain

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.addr = str(peer[0]) if peer else ""
        self.ticket = self.server.limiter.admit(peer_ip(transport), self._timeout)
        if self.ticket is None:  # over the cap: RFC 6120 §4.9.3.18 policy-violation
            transport.write(  # type: ignore[attr-defined]
                b"<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' "
                b"xmlns:stream='http://etherx.jabber.org/streams' id='refused'>"
                b"<stream:error><policy-violation "
                b"xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
                b"</stream:stream>")
            transport.close()
            return
        self.server.connections.add(self)
        loop = asyncio.get_running_loop()
        self.t_last = loop.time()
        self.timer = loop.call_later(HANDSHAKE_TIMEOUT, self._timeout)
        # A penalised address waits before anything it sends is looked at.
        self._hold(self.server.check_slot(self.addr))

    def data_received(self, data: bytes) -> None:
        if self.ticket is None:
            return  # refused
        if self.held is not None:
            self.held.append(data)
            return
        self._hold(self._charge(len(data)))
        if self.held is not None:
            self.held.append(data)
            return
        self.stream.receive_data(data)
        self._pump()

    def _charge(self, n: int) -> float:
        """Token bucket: seconds to wait before `n` more bytes may be processed."""
        rate = self.server.rate
        now = asyncio.get_running_loop().time()
        self.tokens = min(float(rate), self.tokens + (now - self.t_last) * rate) - n
        self.t_last = now
        return -self.tokens / rate if self.tokens < 0 else 0.0

    def _hold(self, delay: float) -> None:
        if delay <= 0 or self.transport is None:
            return
        if self.held is None:
            self.held = []
        self.transport.pause_reading()
        asyncio.get_running_loop().call_later(delay, self._release)

    def _release(self) -> None:
        held, self.held = self.held, None
        if held is None or self.transport is None or self.stream.closed:
            return
        self.transport.resume_reading()
        for data in held:
            self.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.ticket is None:
            return  # refused
        self.ticket.release()
        self.stream.receive_data(b"")
        self._pump()
        self._finish()
        self.transport = None

    def _timeout(self) -> None:
        self.timer = None
        if not self.stream.bound and not self.stream.closed:
            self.close_stream(StreamError("connection-timeout"))

    def _pump(self) -> None:
        while (ev := self.stream.next_event()) is not None:
            if isinstance(ev, HandshakeFailed):
                self.server.failed(self.addr, ev.domain)
            elif isinstance(ev, Bound):
                self.server.succeeded(self.addr)
                if self.ticket is not None:
                    self.ticket.authenticated()
                if self.timer is not None:
                    self.timer.cancel()
                    self.timer = None
                self.full = self.bare = ev.domain
                self.available = True
                self.router.components[ev.domain] = self._incoming
                log.info("component %s connected", ev.domain)
            elif isinstance(ev, Stanza):
                if self.lane:
                    self.run(_later(self.router.route, ev.element, self))
                else:
                    self.router.route(ev.element, self)
        out = self.stream.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)
        if self.stream.closed:
            self._finish()
            if self.transport is not None:
                self.transport.close()

    def _finish(self) -> None:
        self.server.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.bare and self.router.components.get(self.bare) == self._incoming:
            del self.router.components[self.bare]
            log.info("component %s disconnected", self.bare)

    def _incoming(self, stanza: Element, origin: Resource) -> None:
        """Router.components handler: a stanza addressed to the component's domain."""
        self.deliver(stanza)

    # -- Resource ------------------------------------------------------------------------------

    def deliver_bytes(self, data: bytes) -> None:
        # Written without xmlns: under our stream header that is jabber:component:accept.
        if self.stream.bound and not self.stream.closed and self.transport is not None:
            self.transport.write(data)

    def run(self, job: Callable[[], Awaitable[object]]) -> None:
        self.lane.append(job)
        if self.lane_task is None:
            self.lane_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self.lane:
                try:
                    await self.lane[0]()
                except Exception:
                    log.exception("component job failed for %s", self.bare)
                finally:
                    self.lane.popleft()
        finally:
            self.lane_task = None

    def close_stream(self, error: StreamError | None) -> None:
        self.stream.close(error)
        self._pump()


def _later(fn: Callable[..., object], *args: object) -> Callable[[], Awaitable[None]]:
    async def job() -> None:
        fn(*args)
    return job
