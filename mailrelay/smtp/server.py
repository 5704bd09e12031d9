"""SMTP listeners: aiosmtpd's protocol in our own event loop via `loop.create_server`.

`CxSMTP` adds what aiosmtpd lacks: an enhanced status code on every reply once
ENHANCEDSTATUSCODES is advertised (RFC 2034 §3: all replies but the greeting, EHLO's and
intermediate 334/354 ones), replies for its built-in errors that name the limit, our own
MAIL/RCPT parsing (`smtp.command`: the null reverse-path, DSN parameters with their case
kept), BDAT (RFC 3030 CHUNKING/BINARYMIME) into the same DATA hook, and per-connection
command line limits (`smtp.max_unauth_line` before AUTH).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import warnings
from typing import Any, AnyStr, cast

from aiosmtpd.smtp import SMTP

from cxkernel.limiter import ConnectionLimiter, Ticket, peer_ip
from mailrelay.smtp.command import CommandSyntaxError, parse_mail, parse_rcpt
from mailrelay.smtp.handler import MailHandler

log = logging.getLogger("cxgw.smtp")
# aiosmtpd logs every connection at INFO and warns (at WARNING) about the implicit-TLS
# listener, where auth_require_tls=False is exactly right: keep only its errors.
logging.getLogger("mail.log").setLevel(logging.ERROR)

_HAS_ENHANCED = re.compile(r"^\d{3}[ -]\d\.\d{1,3}\.\d{1,3}(\s|$)")
_DEFAULT_ENHANCED = {
    "211": "2.0.0", "214": "2.0.0", "220": "2.0.0", "221": "2.0.0", "235": "2.7.0",
    "250": "2.0.0", "251": "2.1.5", "252": "2.5.0", "421": "4.3.0", "450": "4.2.0",
    "451": "4.3.0", "452": "4.3.1", "454": "4.7.0", "500": "5.5.2", "501": "5.5.4",
    "502": "5.5.1", "503": "5.5.1", "504": "5.5.4", "521": "5.3.2", "530": "5.7.0",
    "534": "5.7.9", "535": "5.7.8", "538": "5.7.11", "550": "5.0.0", "551": "5.1.6",
    "552": "5.3.4", "553": "5.1.3", "554": "5.0.0", "555": "5.5.4",
}
_REWRITE = {
    "552 Error: Too much mail data": "552 5.3.4 Message size exceeds the limit",
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 Line too long",
    "500 Error: line too long": "500 5.5.2 Line too long",
}


def with_enhanced_code(status: str) -> str:
    """Insert a default enhanced code into a reply line that lacks one."""
    if status in _REWRITE:
        return _REWRITE[status]
    if len(status) < 3 or not status[:3].isdigit() or status[:3] in ("334", "354"):
        return status
    if _HAS_ENHANCED.match(status):
        return status
    code = status[:3]
    enhanced = _DEFAULT_ENHANCED.get(code, f"{code[0]}.0.0")
    sep = status[3:4] or " "
    rest = status[4:]
    if rest.startswith("Error: "):
        rest = rest[7:]
    return f"{code}{sep}{enhanced} {rest}".rstrip()


LINGER_SECONDS = 2.0  # how long a session closed with 421 keeps draining input
_BDAT_ARG = re.compile(r"^(\d{1,18})(?: +(LAST))?$", re.IGNORECASE)
_BDAT_PIECE = 64 * 1024  # a chunk is read in pieces of at most this many bytes

# RFC 5321 §4.5.3.1.4: a command line is at most 512 octets; extensions add to it:
# SIZE +26 (RFC 1870 §3), SMTPUTF8 +10 (RFC 6531 §3.4), DSN +100 on MAIL and +500 on
# RCPT (RFC 3461 §5), AUTH up to 12288 (RFC 4954 §4).
_EXTENDED_LIMITS = {"MAIL": 512 + 26 + 10 + 100, "RCPT": 512 + 500, "AUTH": 12288}


class _LineLimits:
    """aiosmtpd's `command_size_limits`, per connection (aiosmtpd's is one dict on the
    class, which every EHLO of every connection grows): the RFC limit of each command,
    and before AUTH never more than `max_unauth_line`."""

    def __init__(self, proto: CxSMTP) -> None:
        self.proto = proto

    def __getitem__(self, command: str) -> int:
        limit = _EXTENDED_LIMITS.get(command, 512)
        session = self.proto.session
        if session is None or not session.authenticated:
            limit = min(limit, self.proto.max_unauth_line)
        return limit

    def __setitem__(self, command: str, value: int) -> None:
        pass  # aiosmtpd adds SIZE/SMTPUTF8 lengths at EHLO: already in _EXTENDED_LIMITS

    def clear(self) -> None:
        pass

    def values(self) -> list[int]:
        return [self[c] for c in (*_EXTENDED_LIMITS, "HELO")]


class LiveSessions:
    """The open sessions of the SMTP listeners, so a stop can say goodbye (issue 13).

    RFC 5321 §3.8: a server shutting down answers 421 and closes. A session outside DATA
    gets "421 4.3.2" at once; one inside DATA finishes its message (it is ours after the
    COMMIT and the 250) and gets the 421 right after that reply."""

    def __init__(self) -> None:
        self.sessions: set[CxSMTP] = set()
        self.stopping = False

    def shutdown(self) -> None:
        self.stopping = True
        for session in list(self.sessions):
            if not session._in_data:
                session.goodbye()

    async def drained(self, timeout: float) -> bool:
        """Wait (up to `timeout` seconds) for the sessions still inside DATA."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(s._in_data for s in self.sessions):
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True


class CxSMTP(SMTP):
    """aiosmtpd's SMTP with enhanced status codes on every reply, the EHLO response in one
    write, and a fast path for plain `<user@domain>` paths."""

    _greeted = False
    _raw_replies = False
    _collect: list[bytes] | None = None

    _limiter: ConnectionLimiter | None = None
    _ticket: Ticket | None = None
    _refused = False
    _live: LiveSessions | None = None
    _in_data = False
    _closing = False  # a 421 was sent: the connection is closing
    max_unauth_line = 4096
    # BDAT state of the current transaction: the chunks so far (None: no BDAT yet),
    # their size, and whether a chunk failed (then later chunks are read and dropped).
    _bdat: bytearray | None = None
    _bdat_failed = False

    @classmethod
    def reader_limit(cls) -> int:
        """The read buffer bound: a text line (1001) or the longest command line allowed."""
        return max(cls.line_length_limit, *_EXTENDED_LIMITS.values()) + 2

    @property  # type: ignore[override]
    def command_size_limits(self) -> _LineLimits:
        return _LineLimits(self)

    @command_size_limits.setter
    def command_size_limits(self, value: Any) -> None:
        pass

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None and self._limiter is not None:  # not the STARTTLS re-entry
            self._ticket = self._limiter.admit(peer_ip(transport), self._deadline)
            if self._ticket is None:
                # Each session may buffer a whole DATA: bound how many a peer can hold.
                # uvloop's transports are not asyncio.WriteTransport subclasses: no assert.
                self._refused = True
                wt = cast(asyncio.WriteTransport, transport)
                wt.write(b"421 4.7.0 Too many connections, try again later\r\n")
                wt.close()
                return
        self._pending: list[bytes] = []
        super().connection_made(transport)
        if self._live is not None:
            self._live.sessions.add(self)

    def goodbye(self) -> None:
        """421 and close: the server is stopping (RFC 5321 §3.8; RFC 3463 X.3.2)."""
        if self._live is not None:
            self._live.sessions.discard(self)
        # uvloop's transports are not asyncio.WriteTransport subclasses: cast, no assert
        transport = cast(asyncio.WriteTransport | None, self.transport)
        if transport is None or transport.is_closing():
            return
        transport.write(b"421 4.3.2 Service shutting down, try again later\r\n")
        transport.close()

    async def _during_data(self, body: Any) -> None:
        """Run DATA or a BDAT chunk as 'in DATA': a stop waits for it, then says 421."""
        self._in_data = True
        try:
            await body
        finally:
            self._in_data = False
            if self._live is not None and self._live.stopping:
                self.goodbye()

    def _deadline(self) -> None:
        """The pre-login deadline passed (a trickle does not extend it)."""
        transport = cast(asyncio.WriteTransport | None, self.transport)
        if transport is None or transport.is_closing():
            return
        transport.write(b"421 4.4.2 Login deadline passed, closing connection\r\n")
        transport.close()

    def connection_lost(self, error: Exception | None) -> None:
        if self._live is not None:
            self._live.sessions.discard(self)
        if self._refused:
            return
        if self._ticket is not None:
            self._ticket.release()
        super().connection_lost(error)

    def _linger_close(self) -> None:
        """Close after a 421 without losing it: send FIN at once (where the transport can),
        keep reading and dropping what the client already pipelined, and close when it
        closes or after LINGER_SECONDS. Closing with unread input would send a RST, which
        can destroy the 421 in the client's receive buffer (Apache's "lingering close")."""
        t = self.transport
        if t is None:
            return
        if isinstance(t, asyncio.WriteTransport) and t.can_write_eof():
            t.write_eof()
        asyncio.get_running_loop().call_later(LINGER_SECONDS, t.close)

    async def smtp_AUTH(self, arg: str) -> None:
        await super().smtp_AUTH(arg)
        if self._ticket is not None and self.session is not None and self.session.authenticated:
            self._ticket.authenticated()

    @classmethod
    def factory(cls, handler: Any, limiter: ConnectionLimiter | None = None,
                live: LiveSessions | None = None, **kw: Any) -> Any:
        """A protocol factory that builds aiosmtpd's per-listener tables once.

        `SMTP.__init__` inspects the handler and itself (getmembers, dir, signature) for
        every connection; that was a sixth of the CPU per message. We build one prototype
        and give each connection a copy with fresh stream state. If aiosmtpd's internals
        ever change shape, this falls back to plain construction.
        """
        loop = kw["loop"]
        proto = cls(handler, **kw)
        proto._limiter = limiter
        proto._live = live
        state = dict(proto.__dict__)
        if not {"_smtp_methods", "_handle_hooks", "_auth_methods", "session"} <= state.keys():
            def plain() -> Any:
                obj = cls(handler, **kw)
                obj._limiter = limiter
                obj._live = live
                return obj
            return plain
        smtp_names = tuple(state["_smtp_methods"])

        def make() -> Any:
            obj = cls.__new__(cls)
            obj.__dict__.update(state)
            asyncio.StreamReaderProtocol.__init__(
                obj, asyncio.StreamReader(loop=loop, limit=cls.reader_limit()),
                client_connected_cb=obj._cb_client_connected, loop=loop)
            obj._smtp_methods = {n: getattr(obj, "smtp_" + n) for n in smtp_names}
            return obj
        return make

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str):
            if self._greeted and not self._raw_replies:
                status = with_enhanced_code(status)  # type: ignore[assignment]
            data = status.encode("utf-8") + b"\r\n"  # type: ignore[union-attr]
        else:
            data = bytes(status) + b"\r\n"
        self._greeted = True
        if self._collect is not None:
            self._collect.append(data)
            return
        if self._closing:
            return  # said 421 already: nothing more goes out
        if data.startswith(b"421"):
            # RFC 5321 §3.8: 421 means the server closes the channel; flush held replies.
            self._closing = True
            self._writer.write(b"".join(self._pending) + data)
            self._pending.clear()
            self._linger_close()
            return
        # RFC 2920 §3.1: with PIPELINING the server may hold replies while more commands
        # are already buffered, and send them together when it would wait for input.
        pending = self._pending
        if self._reader._buffer:  # type: ignore[attr-defined]
            pending.append(data)
            return
        if pending:
            pending.append(data)
            data = b"".join(pending)
            pending.clear()
        self._writer.write(data)
        await self._writer.drain()

    async def smtp_EHLO(self, hostname: str) -> None:
        self._raw_replies = True  # RFC 2034: no enhanced codes in the EHLO response
        self._collect = []  # one write for the whole multi-line response
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._raw_replies = False
            lines, self._collect = self._collect, None
            if lines and not self._closing:
                self._writer.write(b"".join(lines))
                await self._writer.drain()

    def _set_post_data_state(self) -> None:
        super()._set_post_data_state()
        self._bdat = None
        self._bdat_failed = False

    async def smtp_MAIL(self, arg: str | None) -> None:
        """MAIL FROM:<reverse-path> [parameters]; the handler judges the parameters."""
        if await self.check_helo_needed() or await self.check_auth_needed("MAIL"):
            return
        assert self.session is not None and self.envelope is not None
        if self.envelope.mail_from is not None:  # "" (null sender) counts as given
            await self.push("503 5.5.1 Nested MAIL command")
            return
        try:
            path = parse_mail(arg)
        except CommandSyntaxError as exc:
            await self.push(exc.reply())
            return
        if path.params and not self.session.extended_smtp:
            await self.push("501 5.5.4 Parameters need EHLO")  # RFC 5321 §4.1.1.2
            return
        address = (path.route + ":" + path.address) if path.route else path.address
        options = [k if v is None else f"{k}={v}" for k, v in path.params.items()]
        status = await self._call_handler_hook("MAIL", address, options)
        await self.push(status)
        # The port 25 role has no login: a transaction begun ends the pre-login deadline.
        if self._ticket is not None and self.envelope.mail_from is not None:
            self._ticket.authenticated()

    async def smtp_RCPT(self, arg: str | None) -> None:
        """RCPT TO:<forward-path> [parameters]; also after the null reverse-path."""
        if await self.check_helo_needed() or await self.check_auth_needed("RCPT"):
            return
        assert self.session is not None and self.envelope is not None
        if self.envelope.mail_from is None:
            await self.push("503 5.5.1 Need MAIL command")
            return
        if self._bdat is not None:
            await self.push("503 5.5.1 RCPT after BDAT")  # RFC 3030 §2
            return
        try:
            path = parse_rcpt(arg)
        except CommandSyntaxError as exc:
            await self.push(exc.reply())
            return
        if path.params and not self.session.extended_smtp:
            await self.push("501 5.5.4 Parameters need EHLO")
            return
        address = (path.route + ":" + path.address) if path.route else path.address
        options = [k if v is None else f"{k}={v}" for k, v in path.params.items()]
        status = await self._call_handler_hook("RCPT", address, options)
        await self.push(status)

    async def smtp_DATA(self, arg: str) -> None:
        if self._bdat is not None or self._bdat_failed:
            # RFC 3030 §2: DATA and BDAT are not mixed within one transaction.
            await self.push("503 5.5.1 DATA after BDAT")
            return
        if getattr(self.envelope, "body_type", "") == "BINARYMIME":
            # RFC 3030 §3: BINARYMIME content is sent with BDAT only.
            await self.push("503 5.5.1 BODY=BINARYMIME requires BDAT")
            return
        await self._during_data(super().smtp_DATA(arg))

    async def smtp_BDAT(self, arg: str | None) -> None:
        await self._during_data(self._bdat_chunk(arg))

    async def _bdat_chunk(self, arg: str | None) -> None:
        """RFC 3030 §2: `BDAT size [LAST]`, then exactly `size` octets.

        The octets are always read (even when the command is refused: they must not be
        taken for commands). Chunks accumulate up to the size limit; above it the rest is
        read and dropped and the chunk answered 552. The LAST chunk goes through the same
        DATA hook as DATA does.
        """
        m = _BDAT_ARG.match(arg or "")
        if m is None:
            # Without a size we cannot tell where the chunk ends: the session is lost.
            await self.push("501 5.5.4 Syntax: BDAT size [LAST]")
            if self.transport is not None:
                self.transport.close()
            return
        size, last = int(m.group(1)), m.group(2) is not None
        assert self.session is not None and self.envelope is not None
        limit = self.data_size_limit or 0
        refuse = ""
        if not self.session.host_name:
            refuse = "503 5.5.1 Send EHLO first"
        elif self._auth_required and not self.session.authenticated:
            refuse = "530 5.7.0 Authentication required"
        elif self._bdat_failed:
            refuse = "503 5.5.1 Transaction failed; send RSET"
        elif self.envelope.mail_from is None or not self.envelope.rcpt_tos:
            refuse = "503 5.5.1 Need MAIL and RCPT before BDAT"
        buf = self._bdat if self._bdat is not None else bytearray()
        keep = not refuse
        if keep and limit and len(buf) + size > limit:
            refuse, keep = "552 5.3.4 Message size exceeds the limit", False
        remaining = size
        try:
            while remaining:  # bounded: at most one piece beyond what we keep
                piece = await self._reader.readexactly(min(remaining, _BDAT_PIECE))
                remaining -= len(piece)
                self._reset_timeout()  # smtp.timeout is an idle timeout
                if keep:
                    buf += piece
        except asyncio.IncompleteReadError:
            log.info("connection closed during BDAT (%d of %d octets missing)", remaining, size)
            if self.transport is not None:
                self.transport.close()
            return
        if refuse:
            if self.envelope.mail_from is not None:
                self._bdat, self._bdat_failed = None, True
            await self.push(refuse)
            return
        self._bdat = buf
        if not last:
            await self.push(f"250 2.0.0 {size} octets received")
            return
        data, self._bdat = bytes(buf), None
        self.envelope.content = self.envelope.original_content = data
        self.envelope.bdat = True  # type: ignore[attr-defined]
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(status)

    async def smtp_HELO(self, hostname: str) -> None:
        self._raw_replies = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._raw_replies = False


# HELP and the syntax checks read these attributes of aiosmtpd's own methods.
for _name in ("smtp_AUTH", "smtp_MAIL"):
    getattr(CxSMTP, _name).__dict__.update(getattr(SMTP, _name).__dict__)


async def start_listener(role: str, host: str, port: int, handler: MailHandler, *,
                         hostname: str, tls: ssl.SSLContext, max_size: int, timeout: int,
                         max_unauth_line: int = 4096,
                         live: LiveSessions | None = None,
                         limiter: ConnectionLimiter | None = None,
                         ) -> asyncio.base_events.Server:
    """Start one SMTP listener. `role` is smtp | submission | submissions."""
    loop = asyncio.get_running_loop()
    implicit = role == "submissions"
    # SCRAM-*-PLUS only where we can compute the channel binding (advertise what works).
    no_plus = [] if getattr(handler.auth, "channel_binding", None) is not None else [
        "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"]

    def make_factory() -> Any:
        kw: dict[str, Any] = dict(
            hostname=hostname, ident="cx-gateway", data_size_limit=max_size,
            enable_SMTPUTF8=True, decode_data=False, timeout=timeout,
            tls_context=None if implicit else tls, loop=loop)
        if role == "smtp":
            kw.update(require_starttls=False, auth_required=False,
                      auth_exclude_mechanism=["PLAIN", "LOGIN", "CRAM-MD5"])
        elif role == "submission":
            # RFC 8314 / RFC 4954 §4: no AUTH (and here no MAIL) before STARTTLS.
            kw.update(require_starttls=True, auth_required=True, auth_require_tls=True,
                      auth_exclude_mechanism=no_plus)
        else:
            # Implicit TLS: aiosmtpd does not know the transport is TLS, so it must be told
            # not to require STARTTLS before offering AUTH (the connection is TLS already).
            kw.update(require_starttls=False, auth_required=True, auth_require_tls=False,
                      auth_exclude_mechanism=no_plus)
        with warnings.catch_warnings():  # aiosmtpd warns about auth_require_tls=False
            warnings.simplefilter("ignore", UserWarning)
            cls: type[CxSMTP] = type("CxSMTP_" + role, (CxSMTP,),
                                     {"max_unauth_line": max_unauth_line})
            return cls.factory(handler, limiter, live, **kw)

    # Implicit TLS: a client gets this long for its handshake (asyncio's default is 60 s;
    # the connection is not ours, nor counted by the limiter, before it).
    return await loop.create_server(make_factory(), host, port, ssl=tls if implicit else None,
                                    ssl_handshake_timeout=15.0 if implicit else None,
                                    reuse_address=True, backlog=512)
