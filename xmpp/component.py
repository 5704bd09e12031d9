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
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections import deque
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
HANDSHAKE_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Bound:
    domain: str


@dataclass(frozen=True, slots=True, eq=False)
class Stanza:
    element: Element


@dataclass(frozen=True, slots=True)
class Closed:
    pass


Event = Bound | Stanza | Closed


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

    def __init__(self, secrets_: dict[str, str], taken: Callable[[str], bool]) -> None:
        self.secrets = secrets_
        self.taken = taken
        self.parser = StreamParser(content_ns=COMPONENT_NS, max_stanza_bytes=MAX_STANZA)
        self.stream_id = secrets.token_hex(8)
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
                self.close(StreamError("not-authorized"))
                return
            if self.taken(self.domain):
                self.close(StreamError("conflict", "Domain already connected"))
                return
            self.bound = True
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
                 limiter: ConnectionLimiter | None = None) -> None:
        self.host = host
        #: caps and the handshake deadline of the listener (cxkernel.limiter)
        self.limiter = limiter or ConnectionLimiter("xmpp_component", ListenerLimits(50, 20, 10))
        self.secrets = {d.lower(): s for d, s in secrets_.items()}
        self.connections: set[ComponentConnection] = set()
        self._server: asyncio.base_events.Server | None = None

    async def listen(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: ComponentConnection(self), host, port)
        return int(self._server.sockets[0].getsockname()[1])

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
        self.stream = ComponentStream(server.secrets, self._taken)
        self.transport: asyncio.Transport | None = None
        self.lane: deque[Callable[[], Awaitable[object]]] = deque()
        self.lane_task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.ticket: Ticket | None = None

    def _taken(self, domain: str) -> bool:
        return domain in self.router.components or domain == self.router.domain

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
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
        self.timer = asyncio.get_running_loop().call_later(HANDSHAKE_TIMEOUT, self._timeout)

    def data_received(self, data: bytes) -> None:
        if self.ticket is None:
            return  # refused
        self.stream.receive_data(data)
        self._pump()

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
            if isinstance(ev, Bound):
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
