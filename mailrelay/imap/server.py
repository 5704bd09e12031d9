"""The asyncio driver: IMAP listeners that join sockets to ``ImapServerCore`` + ``ImapSession``.

One :class:`ImapConnection` (an ``asyncio.Protocol``) per client. Nothing runs for an
idle connection: bytes arriving start a short-lived task that executes the commands
now complete and ends when the core needs more data; store changes arrive through the
process-wide :class:`~mailrelay.imap.hub.ChangeHub`. TLS (implicit on ``imaps``,
STARTTLS on ``imap``) runs over memory BIOs (:mod:`mailrelay.imap.tlsbio`), so an idle
connection holds no large buffers. One sweeper task enforces the idle timeout.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from cxkernel.limiter import ConnectionLimiter, ListenerLimits, Ticket, peer_ip
from directory.sasl import ChannelBinding, SaslServer, Step

from .hub import ChangeHub
from .proto import commands as c
from .proto.connection import (
    DEFAULT_LIMITS,
    NEED_DATA,
    AuthResponse,
    CommandReceived,
    ConnectionClosed,
    IdleDone,
    ImapServerCore,
    InputPending,
)
from .proto.reader import Limits
from .proto.response import Bye, Tagged
from .proto.state import SessionState
from .session import ImapSession
from .store_api import Change, MailStore
from .tlsbio import TlsFailed, TlsLayer

__all__ = ["ImapListenerConfig", "ImapServer", "ImapConnection"]

log = logging.getLogger("cxgw.imap")

#: Before login a client gets this long between commands (RFC 3501 §5.4 covers only
#: authenticated sessions); afterwards ``idle_timeout``.
UNAUTH_TIMEOUT = 60.0
WRITE_BUFFER_HIGH = 1 << 20
#: replies to pipelined commands are gathered up to this size before one write (one TLS
#: record and one deflate flush instead of one per command)
COALESCE_BYTES = 64 << 10
#: commands run back to back from one connection's input before others get a turn
YIELD_EVERY = 32
#: The refusal of a connection over the cap (RFC 5530 UNAVAILABLE); on imaps it is said after
#: the handshake, for at most MAX_TLS_REFUSALS clients at once and REFUSAL_SECONDS each.
REFUSAL = b"* BYE [UNAVAILABLE] Too many connections, try later\r\n"
MAX_TLS_REFUSALS = 100
REFUSAL_SECONDS = 5.0


class ImapListenerConfig:
    """The knobs the driver needs (taken from ``cxkernel.config.IMAPConfig``)."""

    def __init__(
        self,
        idle_timeout: float = 1800,
        max_unauth_bytes: int = 8192,
        append_limit: int = 50 << 20,
        unauth_timeout: float = UNAUTH_TIMEOUT,
        max_command_bytes: int = 262144,
        append_spool_bytes: int = 1 << 20,
        spool_dir: str | None = None,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.unauth_timeout = unauth_timeout
        self.append_limit = append_limit
        # before login every buffer is bounded by max_unauth_bytes (RFC 9051 §11.1)
        unauth = Limits(max_unauth_bytes, max_unauth_bytes, max_unauth_bytes * 2)
        authed = Limits(
            max_command_bytes,
            append_limit,
            append_limit + max_command_bytes,
            max_plain=max_command_bytes,
            spool_over=append_spool_bytes,
            spool_dir=spool_dir or None,
        )
        self.limits = {
            **DEFAULT_LIMITS,
            SessionState.NOT_AUTHENTICATED: unauth,
            SessionState.AUTHENTICATED: authed,
            SessionState.SELECTED: authed,
        }


class _Login:
    """Adapts the directory's authenticator (one SASL module, one lockout) to the session."""

    __slots__ = ("auth", "remote", "binding")

    def __init__(self, auth: Any, remote: str) -> None:
        self.auth, self.remote = auth, remote
        self.binding: ChannelBinding | None = getattr(auth, "channel_binding", None)

    def prepare(self, name: str) -> str:
        return str(self.auth.username_to_address(name))

    async def login(self, user: str, password: str) -> str | None:
        res = await self.auth.authenticate(user, password, protocol="imap", remote=self.remote)
        return res.account.address if res.ok and res.account is not None else None

    async def advance(self, server: SaslServer, step: Step) -> Step:
        return cast(Step, await self.auth.advance(server, step, protocol="imap",
                                                  remote=self.remote))


class ImapConnection(asyncio.Protocol):
    """One client connection."""

    __slots__ = (
        "srv",
        "implicit_tls",
        "transport",
        "core",
        "session",
        "tls",
        "last",
        "_pump",
        "_paused_reading",
        "_write_ready",
        "_sub",
        "_closed",
        "ticket",
        "_refusing",
    )

    def __init__(self, srv: ImapServer, implicit_tls: bool) -> None:
        self.srv = srv
        self.implicit_tls = implicit_tls
        self.transport: asyncio.Transport | None = None
        self.tls: TlsLayer | None = None
        self.last = time.monotonic()
        self._pump: asyncio.Task[None] | None = None
        self._paused_reading = False
        self._write_ready: asyncio.Future[None] | None = None
        self._sub: int | None = None
        self._closed = False
        self.ticket: Ticket | None = None
        self._refusing = False

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self.ticket = self.srv.limiter(self.implicit_tls).admit(peer_ip(transport),
                                                               self._deadline)
        if self.ticket is None:
            self._closed = True
            if not self.implicit_tls:  # RFC 3501 §7.1.5: BYE as the greeting
                transport.write(REFUSAL)
                transport.close()
            elif self.srv.refusing < MAX_TLS_REFUSALS:
                # On imaps the BYE can only be said after the handshake: queue it, give the
                # client a few seconds for the handshake, then close (bounded in number).
                self._refusing = True
                self.srv.refusing += 1
                self.tls = TlsLayer(self.srv.tls, transport.write)
                self.tls.send(REFUSAL)
                asyncio.get_running_loop().call_later(REFUSAL_SECONDS, transport.close)
            else:
                transport.close()
            return
        # a chunked FETCH waits only when this much is unread by the client: enough to
        # keep the socket busy while the next chunk renders (memory is only used when full)
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        peer = transport.get_extra_info("peername")
        remote = peer[0] if isinstance(peer, tuple) else ""
        self.core = ImapServerCore(self.srv.cfg.limits)
        self.session = ImapSession(
            self.core,
            self.srv.store,
            _Login(self.srv.auth, remote),
            tls=self.implicit_tls,
            appendlimit=self.srv.cfg.append_limit,
        )
        self.session.flush_output = self._push_output
        if self.implicit_tls:
            self.tls = TlsLayer(self.srv.tls, transport.write)
        self.srv.conns.add(self)
        self.session.greeting()
        self._flush()

    def _refuse_tls(self, data: bytes) -> None:
        """A refused imaps client: finish the handshake, which sends the queued BYE."""
        assert self.tls is not None and self.transport is not None
        try:
            self.tls.receive(data)
        except TlsFailed:
            self.transport.close()
            return
        if self.tls.handshaken:
            self.tls.close()
            self.transport.close()

    def _deadline(self) -> None:
        """Not logged in by the deadline (counted from connect: a trickle cannot extend it)."""
        try:
            self.close("Autologout; login deadline passed")
        except Exception as exc:  # e.g. the TLS handshake is still unfinished
            log.info("closing %s at the login deadline: %r", self.transport, exc)
            self._abort()

    def data_received(self, data: bytes) -> None:
        if self._refusing:
            self._refuse_tls(data)
            return
        if self._closed:
            return
        self.last = time.monotonic()
        if self.tls is not None:
            try:
                data = self.tls.receive(data)
            except TlsFailed as exc:  # one INFO line, no traceback (anyone can cause it)
                peer = self.transport.get_extra_info("peername") if self.transport else None
                log.info("tls failure from %s: %s", peer[0] if peer else "?", exc)
                self._abort()
                return
            if data:
                self.core.receive_data(data)
            if self.tls.closed:
                self.core.receive_data(b"")  # close_notify is an EOF
            elif not data:
                return  # handshake or a partial record
        else:
            self.core.receive_data(data)
        if self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._run())
        elif not self._paused_reading and self.transport is not None:
            # a command is executing: stop reading until it is done (bounded buffers)
            self._paused_reading = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        if self.ticket is None:
            return None
        self.core.receive_data(b"")
        if self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._run())
        return True  # we close once pending commands are answered

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refusing:
            self._refusing = False
            self.srv.refusing -= 1
        self._closed = True
        core = getattr(self, "core", None)  # a refused connection never got one
        if core is not None:
            core.discard_input()  # a half-received APPEND spool goes now, not at GC
        if self.ticket is not None:
            self.ticket.release()
        self.srv.conns.discard(self)
        self._subscribe(None)
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)

    def pause_writing(self) -> None:
        if self._write_ready is None or self._write_ready.done():
            self._write_ready = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)

    # -- output --------------------------------------------------------------------------
    def _flush(self) -> None:
        data = self.core.data_to_send()
        if not data or self._closed or self.transport is None or self.transport.is_closing():
            return
        if self.tls is not None:
            try:
                self.tls.send(data)
            except TlsFailed:
                self._abort()
        else:
            self.transport.write(data)

    async def _push_output(self) -> bool:
        """Mid-command flush (a long FETCH): write, then wait while the client is slow.
        False once the connection is gone (the command can stop)."""
        self._flush()
        if self._write_ready is not None and not self._write_ready.done():
            await self._write_ready
        return not self._closed

    def _abort(self) -> None:
        self._closed = True
        if self.transport is not None:
            self.transport.close()

    def close(self, text: str) -> None:
        """Send ``* BYE text`` and close (idle timeout, shutdown)."""
        if self._closed:
            return
        self.core.send(Bye(text))
        self._flush()
        if self.tls is not None:
            self.tls.close()
        self._abort()

    # -- command execution ---------------------------------------------------------------
    async def _run(self) -> None:
        try:
            n = 0
            while not self._closed:
                ev = self.core.next_event()
                if ev is NEED_DATA:
                    self._flush()  # e.g. "+" for a synchronising literal
                    break
                n += 1
                if isinstance(ev, InputPending) or n % YIELD_EVERY == 0:
                    # compressed input still inflating, or a long pipeline: let the
                    # other connections run (a deflate bomb never blocks the loop)
                    self._flush()
                    await asyncio.sleep(0)
                    if isinstance(ev, InputPending):
                        continue
                if isinstance(ev, ConnectionClosed):
                    self._flush()
                    if self.tls is not None:
                        self.tls.close()
                    self._abort()
                    break
                await self._handle(ev)
                if (
                    self.core.pending_output < COALESCE_BYTES
                    and self.core.buffered_lines(1)
                    and not self.core.idling
                ):
                    continue  # a pipelined command is waiting: answer both in one write
                self._flush()
                if self._write_ready is not None and not self._write_ready.done():
                    await self._write_ready
        finally:
            self._pump = None
            if self._paused_reading and not self._closed and self.transport is not None:
                self._paused_reading = False
                self.transport.resume_reading()  # the loop above consumed what arrived

    async def _handle(self, ev: object) -> None:
        starttls = (
            isinstance(ev, CommandReceived)
            and isinstance(ev.command, c.StartTLS)
            and not self.session.tls
        )
        try:
            await self.session.handle(ev, now=datetime.now(UTC))  # type: ignore[arg-type]
        except Exception:
            log.exception("IMAP command failed")
            tag = (
                ev.command.tag
                if isinstance(ev, CommandReceived)
                else ev.tag
                if isinstance(ev, IdleDone | AuthResponse)
                else None
            )
            if tag is not None:
                self.core.send(Tagged(tag, "NO", "Server error, please try again", "SERVERBUG"))
            return
        if starttls and self.transport is not None:
            self._flush()  # the tagged OK goes out in clear text
            self.tls = TlsLayer(self.srv.tls, self.transport.write)
            self.session.tls_started()
        if self.session.user is not None and self.ticket is not None and self.ticket.pending:
            self.ticket.authenticated()
        view = self.session.view
        self._subscribe(view.mailbox_id if view is not None else None)

    # -- change notifications (hub.Subscriber) -------------------------------------------
    def _subscribe(self, mailbox_id: int | None) -> None:
        if mailbox_id == self._sub:
            return
        if self._sub is not None:
            self.srv.hub.unsubscribe(self._sub, self)
        self._sub = mailbox_id
        if mailbox_id is not None:
            self.srv.hub.subscribe(mailbox_id, self)

    def known_modseq(self, mailbox_id: int) -> int | None:
        return self.session.known_modseq(mailbox_id)

    async def deliver_changes(self, mailbox_id: int, changes: Sequence[Change]) -> None:
        if self._closed:
            return
        await self.session.notify(changes, mailbox_id)  # the view keeps only what is new
        if self.core.idling:
            self._flush()


class ImapServer:
    """The ``imap`` / ``imaps`` listeners, the change hub and the idle sweeper."""

    def __init__(
        self,
        store: MailStore,
        hub: ChangeHub,
        auth: Any,
        tls: ssl.SSLContext,
        cfg: ImapListenerConfig,
        limiters: dict[str, ConnectionLimiter] | None = None,
    ) -> None:
        self.store, self.hub, self.auth, self.tls, self.cfg = store, hub, auth, tls, cfg
        #: per listener ("imap", "imaps"): caps and the login deadline (cxkernel.limiter)
        self.limiters = limiters or {}
        self.refusing = 0  # refused imaps clients being told so after their handshake
        self.conns: set[ImapConnection] = set()
        self.servers: list[asyncio.base_events.Server] = []
        self._sweeper: asyncio.Task[None] | None = None

    def limiter(self, implicit_tls: bool) -> ConnectionLimiter:
        name = "imaps" if implicit_tls else "imap"
        if name not in self.limiters:
            self.limiters[name] = ConnectionLimiter(name, ListenerLimits())
        return self.limiters[name]

    #: how often idle connections are looked for (a pass over 10,000 costs ~2 ms)
    SWEEP_SECONDS = 1.0

    async def listen(self, host: str, port: int, implicit_tls: bool) -> int:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: ImapConnection(self, implicit_tls), host, port, backlog=1024
        )
        self.servers.append(server)
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep())
        return int(server.sockets[0].getsockname()[1])

    async def _sweep(self) -> None:
        """Close connections idle for too long (RFC 3501 §5.4 autologout)."""
        while True:
            await asyncio.sleep(self.SWEEP_SECONDS)
            self.hub.check()  # LISTEN again if its connection dropped unnoticed
            now = time.monotonic()
            for conn in list(self.conns):
                authed = conn.session.user is not None
                limit = self.cfg.idle_timeout if authed else self.cfg.unauth_timeout
                if conn._pump is None and now - conn.last > limit:
                    conn.close("Autologout; idle for too long")

    async def stop(self) -> None:
        for s in self.servers:
            s.close()
        for conn in list(self.conns):
            conn.close("Server shutting down")
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.hub.stop()
