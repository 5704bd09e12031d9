"""SMTP listeners: aiosmtpd's protocol in our own event loop via `loop.create_server`.

`CxSMTP` adds what aiosmtpd lacks: an enhanced status code on every reply once
ENHANCEDSTATUSCODES is advertised (RFC 2034 §3: all replies but the greeting, EHLO's and
intermediate 334/354 ones), and replies for its built-in errors that name the limit.
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


_SIMPLE_PATH = re.compile(r"<([^<>\"()\s,:;\\@\[\]]+@[^<>\"()\s,:;\\@\[\]]+)?>")


class CxSMTP(SMTP):
    """aiosmtpd's SMTP with enhanced status codes on every reply, the EHLO response in one
    write, and a fast path for plain `<user@domain>` paths."""

    _greeted = False
    _raw_replies = False
    _collect: list[bytes] | None = None

    _limiter: ConnectionLimiter | None = None
    _ticket: Ticket | None = None
    _refused = False

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

    def _deadline(self) -> None:
        """The pre-login deadline passed (a trickle does not extend it)."""
        transport = cast(asyncio.WriteTransport | None, self.transport)
        if transport is None or transport.is_closing():
            return
        transport.write(b"421 4.4.2 Login deadline passed, closing connection\r\n")
        transport.close()

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        if self._ticket is not None:
            self._ticket.release()
        super().connection_lost(error)

    async def smtp_AUTH(self, arg: str) -> None:
        await super().smtp_AUTH(arg)
        if self._ticket is not None and self.session is not None and self.session.authenticated:
            self._ticket.authenticated()

    async def smtp_MAIL(self, arg: str | None) -> None:
        await super().smtp_MAIL(arg)
        # The port 25 role has no login: a transaction begun ends the pre-login deadline.
        if self._ticket is not None and self.envelope is not None and \
                self.envelope.mail_from is not None:
            self._ticket.authenticated()

    @classmethod
    def factory(cls, handler: Any, limiter: ConnectionLimiter | None = None,
                **kw: Any) -> Any:
        """A protocol factory that builds aiosmtpd's per-listener tables once.

        `SMTP.__init__` inspects the handler and itself (getmembers, dir, signature) for
        every connection; that was a sixth of the CPU per message. We build one prototype
        and give each connection a copy with fresh stream state. If aiosmtpd's internals
        ever change shape, this falls back to plain construction.
        """
        loop = kw["loop"]
        proto = cls(handler, **kw)
        proto._limiter = limiter
        state = dict(proto.__dict__)
        if not {"_smtp_methods", "_handle_hooks", "_auth_methods", "session"} <= state.keys():
            def plain() -> Any:
                obj = cls(handler, **kw)
                obj._limiter = limiter
                return obj
            return plain
        smtp_names = tuple(state["_smtp_methods"])

        def make() -> Any:
            obj = cls.__new__(cls)
            obj.__dict__.update(state)
            asyncio.StreamReaderProtocol.__init__(
                obj, asyncio.StreamReader(loop=loop, limit=cls.line_length_limit),
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
            if lines:
                self._writer.write(b"".join(lines))
                await self._writer.drain()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd parses every path with email's header parser (and defines a class per
        # call); plain paths, which are nearly all of them, need none of that.
        m = _SIMPLE_PATH.match(arg)
        if m is not None:
            return m.group(1) or "", arg[m.end():]
        return super()._getaddr(arg)

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
            return CxSMTP.factory(handler, limiter, **kw)

    # Implicit TLS: a client gets this long for its handshake (asyncio's default is 60 s;
    # the connection is not ours, nor counted by the limiter, before it).
    return await loop.create_server(make_factory(), host, port, ssl=tls if implicit else None,
                                    ssl_handshake_timeout=15.0 if implicit else None,
                                    reuse_address=True, backlog=512)
