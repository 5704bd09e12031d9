"""The asyncio driver of c2s streams: listeners, TLS, rate limit, and the session core.

One ``C2SConnection`` (an ``asyncio.Protocol``) per TCP connection feeds bytes to a
sans-IO ``ServerSession`` and answers its requests (STARTTLS, SCRAM keys, PLAIN verdict,
bind). Stanzas from a bound client go straight to ``Router.route`` in ``data_received``:
no task per message. Work that needs I/O runs in the connection's ordered lane (one task
while there is work). Output is buffered per connection and flushed once per event-loop
iteration for all connections (one TLS record and one ``write`` for a burst).

Limits: a token bucket per connection (``xmpp.rate_bytes_per_s``) pauses reading when a
client sends faster; it is never disconnected for that, and nobody else waits for it.
Stanza size limits are enforced by the core; unauthenticated streams may only do TLS and
SASL (core) and must bind a resource by the listener's login deadline
(``limits.xmpp_preauth_seconds``, cxkernel.limiter), which also caps connections.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from xml.etree.ElementTree import Element, fromstring

from cxkernel.limiter import ConnectionLimiter, ListenerLimits, Ticket
from cxkernel.metrics import Metrics
from directory.auth import Authenticator
from directory.model import Account

from .caps import NODE, verification_string
from .host import Host
from .jid import JID
from .proto.config import FeaturesConfig, SessionConfig
from .proto.errors import StanzaError, StreamError
from .proto.events import (
    Authenticated,
    AuthFailed,
    AuthRequested,
    BindRequested,
    NonzaReceived,
    PlainCredentials,
    SessionBound,
    StanzaFromClient,
    StartTLSRequested,
    StreamEnded,
)
from .proto.serializer import to_bytes
from .proto.session import ServerSession
from .proto.state import SessionState
from .router import Resource, SessionEvent
from .tls import TLSClosed, TLSLayer

#: XEP-0198: a stream whose client never acknowledges is closed past this many
#: unacknowledged stanzas (they then go to offline storage): bounded memory per session.
MAX_UNACKED = 5000
log = logging.getLogger("cxgw.xmpp.c2s")

#: The refusal of a connection over the cap on the STARTTLS port (RFC 6120 §4.9.3.18).
REFUSAL_HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                  "xmlns:stream='http://etherx.jabber.org/streams' from='{domain}' "
                  "id='refused' version='1.0'>")
MAX_TLS_REFUSALS = 100   # refused 5223 clients told so after their handshake, at once
REFUSAL_SECONDS = 5.0    # ... each for at most this long
REFUSAL = (b"<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
           b"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Too many connections</text>"
           b"</stream:error></stream:stream>")
MAX_RESOURCES = 20        # bound resources per account (RFC 6120 §7.6.2.1 resource-constraint)
IDLE_PARSER = 30.0        # seconds without input after which a stream's parser is released
MAX_WRITE_BUFFER = 8 << 20  # bytes queued for a client that does not read: then closed
REGISTER_WAIT = 2.0       # seconds a bind waits for the cluster registry (issue 14)


class C2SServer:
    """The listeners and the set of live connections."""

    def __init__(self, host: Host, auth: Authenticator, tls: ssl.SSLContext,
                 metrics: Metrics | None = None,
                 limiters: dict[str, ConnectionLimiter] | None = None) -> None:
        self.host = host
        self.auth = auth
        self.tls = tls
        self.metrics = metrics or Metrics()
        self.connections: set[C2SConnection] = set()
        self.limiters = limiters or {}
        self.refusing = 0
        self._servers: list[asyncio.base_events.Server] = []
        self._dirty: list[C2SConnection] = []
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        cfg = host.cfg
        features = FeaturesConfig(
            roster_ver="roster-ver" in host.stream_features,
            sm="sm" in host.stream_features, csi="csi" in host.stream_features,
            caps=(NODE, verification_string(host.identities, host.features,
                                            host.server_forms))
            if host.identities else None)
        common: dict[str, Any] = dict(
            domains=(host.domain,), features=features,
            max_stanza_bytes=cfg.max_stanza_size,
            max_stanza_bytes_unauthenticated=cfg.max_unauth_stanza_size,
            binding=auth.channel_binding)
        self.config_starttls = SessionConfig(direct_tls=False, **common)
        self.config_direct = SessionConfig(direct_tls=True, **common)
        self.metrics.gauge("xmpp_sessions", lambda: float(host.router.count()),
                           "bound XMPP sessions")
        self.metrics.gauge("xmpp_connections", lambda: float(len(self.connections)),
                           "open XMPP connections")
        self.paused = False
        self._idle_task: asyncio.Task[None] | None = None
        host.hooks.on("c2s/pressure", self._pressure)

    def _pressure(self, on: bool) -> None:
        """Stop (or resume) reading from every client while a feature catches up."""
        self.paused = on
        self.metrics.inc("xmpp_backpressure_total" if on else "xmpp_backpressure_cleared_total")
        for conn in list(self.connections):
            t = conn.transport
            if t is None or conn.ended:
                continue
            if on:
                t.pause_reading()
            elif conn.held is None:  # a rate-limited connection resumes on its own timer
                t.resume_reading()

    def limiter(self, direct_tls: bool) -> ConnectionLimiter:
        name = "xmpps" if direct_tls else "xmpp"
        if name not in self.limiters:
            self.limiters[name] = ConnectionLimiter(name, ListenerLimits(), self.metrics)
        return self.limiters[name]

    async def listen(self, host: str, port: int, direct_tls: bool) -> int:
        """Start a listener; returns the bound port."""
        loop = self._loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: C2SConnection(self, direct_tls), host, port, backlog=1024)
        self._servers.append(server)
        if self._idle_task is None:
            self._idle_task = loop.create_task(self._release_idle_parsers())
        return int(server.sockets[0].getsockname()[1])

    async def _release_idle_parsers(self) -> None:
        """Each stream quiet for IDLE_PARSER seconds gives back its expat parser (its own
        decision: it keeps it mid-stanza); the clock lives here, not in the core."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(IDLE_PARSER)
            quiet = loop.time() - IDLE_PARSER
            for conn in list(self.connections):
                if conn.t_last < quiet and not conn.ended:
                    conn.session.release_parser()

    # -- output batching -------------------------------------------------------------------

    def mark_dirty(self, conn: C2SConnection) -> None:
        self._dirty.append(conn)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop = self._loop or asyncio.get_running_loop()
            loop.call_soon(self._flush_all)

    def _flush_all(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()

    # -- shutdown ------------------------------------------------------------------------------

    async def stop(self, timeout: float = 5.0) -> None:
        """Close the listeners, end every stream with ``system-shutdown`` (RFC 6120
        §4.9.3.20), and give the lanes a moment to finish."""
        for server in self._servers:
            server.close()
        if self._idle_task is not None:
            self._idle_task.cancel()
            self._idle_task = None
        for conn in list(self.connections):
            conn.close_stream(StreamError("system-shutdown"))
        # Lanes now hold each session's last work (unavailable presence, last activity).
        lanes = [c.lane_task for c in list(self.connections) if c.lane_task is not None]
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), timeout)
            except TimeoutError:
                pass
        self._servers.clear()
        if lanes:
            await asyncio.wait(lanes, timeout=timeout)


class C2SConnection(asyncio.Protocol, Resource):
    """One client connection: transport ↔ TLS ↔ ServerSession ↔ Router."""

    __slots__ = ("server", "router", "session", "transport", "tls", "wbuf", "lane",
                 "lane_task", "account", "peer", "tokens", "t_last", "held", "ended",
                 "bound", "sm", "csi", "dropped", "ip", "ticket", "direct_tls")

    def __init__(self, server: C2SServer, direct_tls: bool) -> None:
        Resource.__init__(self)
        self.server = server
        self.router = server.host.router
        self.session = ServerSession(server.config_direct if direct_tls
                                     else server.config_starttls, new_id=_new_id)
        self.transport: asyncio.Transport | None = None
        self.tls: TLSLayer | None = TLSLayer(server.tls) if direct_tls else None
        self.wbuf: list[bytes] = []
        self.lane: deque[Callable[[], Awaitable[object]]] | None = None
        self.lane_task: asyncio.Task[None] | None = None
        self.account: Account | None = None
        self.peer = ""
        self.ip = ""
        self.tokens = float(server.host.cfg.rate_bytes_per_s)
        self.t_last = 0.0
        self.held: list[bytes] | None = None  # input waiting for the rate limit
        self.ended = False
        self.bound = False
        self.sm: Any = None       # XEP-0198 ledger (xmpp.features.sm): counts, unacked queue
        self.csi: Any = None      # XEP-0352 hold of an inactive client (xmpp.features.csi)
        self.dropped = False      # the transport went away without </stream:stream>
        self.ticket: Ticket | None = None  # cxkernel.limiter: caps and the login deadline
        self.direct_tls = direct_tls

    # -- transport callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop: not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:  # small stanzas must not wait for delayed ACKs (Nagle)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else ""
        self.ip = str(peer[0]) if peer else ""
        self.ticket = self.server.limiter(self.direct_tls).admit(self.ip, self._auth_timeout)
        if self.ticket is None:
            self.ended = True
            refusal = REFUSAL_HEADER.format(domain=self.server.host.domain).encode() + REFUSAL
            if not self.direct_tls:
                # RFC 6120 §4.9.1.3: a stream header, then the error, then close.
                transport.write(refusal)  # type: ignore[attr-defined]
                transport.close()
            elif self.server.refusing < MAX_TLS_REFUSALS:
                # On 5223 the error can only be said after the handshake (bounded in number
                # and time): _refuse_tls finishes it.
                self.server.refusing += 1
                self.held = [refusal]
                asyncio.get_running_loop().call_later(REFUSAL_SECONDS, transport.close)
            else:
                transport.close()
            return
        self.server.connections.add(self)
        if self.server.paused:
            transport.pause_reading()  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        self.t_last = loop.time()

    def data_received(self, data: bytes) -> None:
        if self.ticket is None:
            if self.held is not None:
                self._refuse_tls(data)
            return  # refused
        delay = self._charge(len(data))
        if self.held is not None:  # over the rate: wait with the rest (flow control)
            self.held.append(data)
            return
        if delay > 0:
            self.held = [data]
            if self.transport is not None:
                self.transport.pause_reading()
            loop = self.server._loop or asyncio.get_running_loop()
            loop.call_later(delay, self._release)
            return
        self._process(data)

    def _refuse_tls(self, data: bytes) -> None:
        """A refused 5223 client: finish the handshake, then say policy-violation."""
        transport, tls = self.transport, self.tls
        assert transport is not None and tls is not None and self.held is not None
        try:
            tls.receive(data)
        except (ssl.SSLError, TLSClosed):
            transport.close()
            return
        out = tls.outgoing()
        if tls.handshaken:
            out += tls.encrypt(self.held[0]) + tls.close_notify()
        if out:
            transport.write(out)
        if tls.handshaken:
            transport.close()

    def _process(self, data: bytes) -> None:
        tls = self.tls
        if tls is not None:
            try:
                plain = tls.receive(data)
            except TLSClosed:
                self.dropped = True
                self.session.receive_data(b"")
                self._pump()
                return
            except ssl.SSLError as exc:
                log.info("tls failure from %s: %s", self.peer, exc.reason)
                self._abort()
                return
            out = tls.outgoing()
            if out and self.transport is not None:
                self.transport.write(out)  # handshake records
            if not plain:
                return
            data = plain
        self.session.receive_data(data)
        self._pump()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self.ticket is None:  # refused
            if self.held is not None:
                self.held = None
                self.server.refusing -= 1
            return
        self.ticket.release()
        self.server.connections.discard(self)
        if not self.ended:
            self.dropped = True
            self.session.receive_data(b"")
            self._pump()
        self._finish()
        self.transport = None

    def pause_writing(self) -> None:
        self.data["write-paused"] = True

    def resume_writing(self) -> None:
        self.data.pop("write-paused", None)

    # -- rate limit (token bucket) ---------------------------------------------------------

    def _charge(self, n: int) -> float:
        """Take `n` bytes from the bucket (refilled at the rate, holding at most one
        second's worth); the seconds to wait before these bytes may be processed."""
        rate = self.server.host.cfg.rate_bytes_per_s
        loop = self.server._loop or asyncio.get_running_loop()
        now = loop.time()
        tokens = min(float(rate), self.tokens + (now - self.t_last) * rate) - n
        self.t_last = now
        self.tokens = tokens
        return -tokens / rate if tokens < 0 else 0.0

    def _release(self) -> None:
        """The wait is over: process what was held, then read again."""
        held, self.held = self.held, None
        if self.ended or held is None:
            return
        if self.transport is not None and not self.server.paused:
            self.transport.resume_reading()
        data = b"".join(held)
        delay = self._charge(0)  # bytes that came in while pausing may still be over
        if data:
            self._process(data)
        if delay > 0 and not self.ended and self.held is None:
            self.held = []
            if self.transport is not None:
                self.transport.pause_reading()
            loop = self.server._loop or asyncio.get_running_loop()
            loop.call_later(delay, self._release)

    # -- the session core ---------------------------------------------------------------------

    def _pump(self) -> None:
        session = self.session
        router = self.router
        while (ev := session.next_event()) is not None:
            kind = type(ev)
            if kind is StanzaFromClient:
                el = ev.element  # type: ignore[union-attr]
                if self.sm is not None:
                    self.sm.received()  # XEP-0198 §4: handled
                if self.lane:
                    self.run(_later(router.route, el, self))  # keep order behind async work
                else:
                    router.route(el, self)
            elif kind is AuthRequested or kind is PlainCredentials:
                self.run(_later_async(self._sasl_work, ev))
            elif kind is BindRequested:
                self._bind(ev)  # type: ignore[arg-type]
            elif kind is SessionBound:
                self.bound = True
                if self.ticket is not None:
                    self.ticket.authenticated()
                self.server.metrics.inc("xmpp_sessions_bound_total")
                self.run(_later_async(self.server.host.bus.fire, "session/bound",
                                      SessionEvent(self)))
            elif kind is Authenticated:
                self.server.metrics.inc("xmpp_logins_total", result="ok")
            elif kind is AuthFailed:
                self.server.metrics.inc("xmpp_logins_total", result="fail")
            elif kind is StartTLSRequested:
                self._start_tls()
            elif kind is NonzaReceived:
                self.server.host.hooks.fire("c2s/nonza", ev.element, self)  # type: ignore[union-attr]
            elif kind is StreamEnded:
                self._ended()
                return
        out = session.data_to_send()
        if out:
            if self.sm is not None and session.state is SessionState.BOUND:
                # Stanzas the core answered itself (errors, session): counted both ways.
                for el in _stanzas(out):
                    self.sm.received()
                    self.emit(to_bytes(el))
                return
            self._write(out)

    def _start_tls(self) -> None:
        # RFC 6120 §5.4.3.3: <proceed/> goes out in the clear, then TLS starts at once.
        out = self.session.data_to_send()
        if out and self.transport is not None:
            self.flush()
            self.transport.write(out)
        self.tls = TLSLayer(self.server.tls)
        self.session.tls_started()

    async def _sasl_work(self, ev: AuthRequested | PlainCredentials) -> None:
        """The directory's part of the exchange (keys, lockout, password or proof check)."""
        exchange = self.session.sasl
        if exchange is None or self.ended:
            return
        step = await self.server.auth.advance(exchange, ev.work,  # type: ignore[arg-type]
                                              protocol="xmpp", remote=self.ip)
        self.account = exchange.account  # type: ignore[assignment]
        self.session.sasl_continue(step)
        self._pump()

    def _bind(self, ev: BindRequested) -> None:
        username = self.session.username or ""
        host = self.server.host
        try:
            jid = JID(username, host.domain, ev.resource)
        except ValueError:
            self.session.bind_refused(StanzaError("bad-request"))
            return
        existing = self.router.sessions.get(f"{username}@{host.domain}", {})
        if len(existing) >= MAX_RESOURCES and ev.resource not in existing:
            self.session.bind_refused(StanzaError("resource-constraint"))
            return
        self.router.bind(self, jid)
        wait = self.router.registered(self)
        if wait is None:
            self.session.bound(jid)
        else:  # other nodes must be able to route to it when the client learns its JID
            self.run(_later_async(self._bound_when, jid, wait))

    async def _bound_when(self, jid: JID, wait: Awaitable[None]) -> None:
        try:
            await asyncio.wait_for(wait, REGISTER_WAIT)
        except TimeoutError:  # database slow or away: serve locally meanwhile
            log.warning("%s bound before the other nodes know it", jid)
        if not self.ended:
            self.session.bound(jid)
            self._pump()

    def _ended(self) -> None:
        if self.ended:
            return
        self.ended = True
        out = self.session.data_to_send()
        if out:
            self._write(out)
        self.flush()
        transport = self.transport
        if transport is not None:
            if self.tls is not None and self.tls.handshaken:
                try:
                    transport.write(self.tls.close_notify())
                except Exception:
                    pass
            transport.close()
        self._finish()

    def _finish(self) -> None:
        self.ended = True
        if self.ticket is not None:
            self.ticket.authenticated()  # no deadline for a connection that is over
        if self.bound:
            if self.dropped and self.sm is not None and \
                    self.server.host.hooks.fire("c2s/hibernate", self):
                return  # XEP-0198 §5: kept for resumption; the sm module releases it
            self.release()

    def release(self) -> None:
        """Leave the sessions table; features learn that the session is over."""
        if self.bound:
            self.bound = False
            self.router.unbind(self)
            self.run(_later_async(self.server.host.bus.fire, "session/closed",
                                  SessionEvent(self)))

    def abandon(self) -> None:
        """The client resumed this session elsewhere: drop the old transport (XEP-0198 §5)."""
        if not self.ended:
            self.dropped = True
            self._abort()

    def take_over(self, old: C2SConnection) -> None:
        """XEP-0198 resumption: this stream carries `old`'s session from now on (address,
        presence, feature state, place in the sessions table); no bind."""
        assert old.jid is not None
        self.priority, self.available = old.priority, old.available
        self.presence, self.directed = old.presence, old.directed
        self.data, old.data = old.data, {}
        self.sm, self.csi, old.csi = old.sm, old.csi, None
        old.bound = False
        self.router.bind(self, old.jid)
        self.session.resumed(old.jid)
        self.bound = True
        if self.ticket is not None:
            self.ticket.authenticated()

    def _abort(self) -> None:
        self.ended = True
        if self.transport is not None:
            self.transport.abort()
        self._finish()

    def _auth_timeout(self) -> None:
        """The login deadline (from connect; a trickle cannot extend it) passed unbound."""
        if not self.bound and not self.ended:
            self.close_stream(StreamError("connection-timeout"))

    # -- Resource: output, lane, close ---------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if not self.wbuf:
            self.server.mark_dirty(self)
        self.wbuf.append(data)

    def deliver_bytes(self, data: bytes) -> None:
        csi = self.csi
        if csi is not None and csi.offer(data, self):
            return  # XEP-0352: held for an inactive client
        self.emit(data)

    def emit(self, data: bytes) -> None:
        """A stanza leaves for the client now (XEP-0198: counted and kept until acked,
        written to the connection that carries the session, if any)."""
        sm = self.sm
        if sm is not None:
            data = sm.sent_stanza(data)
            if sm.held is not None:
                sm.held.append((sm.sent, data))  # pinned by the cluster: see Ledger.pin
                return
            conn = sm.conn
            if conn is not None:
                conn.put(data)
                if len(sm.queue) > MAX_UNACKED:
                    # A client that never acknowledges would make us keep everything: close
                    # it; its unacknowledged stanzas then go on to offline storage, once.
                    conn.close_stream(StreamError("policy-violation",
                                                  "too many unacknowledged stanzas"))
            return
        self.put(data)

    def put(self, data: bytes) -> None:
        if self.ended or self.session.state is not SessionState.BOUND:
            return
        if not self.wbuf:
            self.server.mark_dirty(self)
        self.wbuf.append(data)

    def write_raw(self, data: bytes) -> None:
        """A nonza (XEP-0198 acks, enabled, resumed): written, not counted."""
        if not self.ended:
            self._write(data)

    def flush(self) -> None:
        if not self.wbuf:
            return
        data = b"".join(self.wbuf)
        self.wbuf.clear()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.tls is not None:
            data = self.tls.encrypt(data)
        transport.write(data)
        if "write-paused" in self.data and \
                transport.get_write_buffer_size() > MAX_WRITE_BUFFER and not self.ended:
            # A client that stops reading must not make us buffer without bound.
            log.info("closing %s: %d bytes unread", self.full or self.peer,
                     transport.get_write_buffer_size())
            self.close_stream(StreamError("policy-violation", "Not reading"))

    def run(self, job: Callable[[], Awaitable[object]]) -> None:
        lane = self.lane
        if lane is None:
            lane = self.lane = deque()
        lane.append(job)
        if self.lane_task is None:
            self.lane_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        lane = self.lane
        assert lane is not None
        try:
            while lane:
                job = lane[0]
                try:
                    await job()
                except Exception:
                    log.exception("xmpp session job failed for %s", self.full or self.peer)
                finally:
                    lane.popleft()
        finally:
            self.lane_task = None
            if not lane:
                self.lane = None  # an idle session keeps no deque (memory per session)

    def close_stream(self, error: StreamError | None) -> None:
        if self.ended:
            return
        self.session.close(error)
        self._pump()


def _stanzas(out: bytes) -> Iterator[Element]:
    """The stanzas in a chunk of core output (written without namespaces)."""
    try:
        yield from fromstring(b'<w xmlns="jabber:client">' + out + b"</w>")
    except Exception:
        log.warning("unparsable core output while stream management is on")


def _new_id() -> str:
    """Stream ids and server-made resources (RFC 6120 §4.7.3: unpredictable)."""
    return secrets.token_urlsafe(12)


def _later(fn: Callable[..., object], *args: Any) -> Callable[[], Awaitable[None]]:
    """A lane job running a synchronous call."""
    async def job() -> None:
        fn(*args)
    return job


def _later_async(fn: Callable[..., Awaitable[Any]], *args: Any) -> Callable[[], Awaitable[Any]]:
    return lambda: fn(*args)
