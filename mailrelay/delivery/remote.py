"""Remote delivery over SMTP: to the smarthost, or by MX (Postfix `smtp`, maddy `remote`).

`RemoteDelivery.deliver` sends one message to recipients of one destination domain and
answers one `RcptResult` per recipient, in the caller's order (ARCHITECTURE rule 5: per
recipient results; failures are temporary unless proven permanent).

What is permanent: a 5xx reply from the peer, a domain that does not exist or has a null
MX, and a message the peer cannot take without us changing its bytes (8-bit content
without 8BITMIME, UTF-8 addresses without SMTPUTF8, larger than the peer's SIZE). Every
connection, DNS, TLS or timeout problem is temporary (4.4.x / 4.7.x).

The message bytes are sent as given: signed (DKIM, S/MIME) mail must arrive byte-exact, so
nothing here parses, re-encodes or re-folds it. aiosmtplib turns bare LF/CR into CRLF and
dot-stuffs lines that start with "." (RFC 5321 §4.5.2); both are undone by the receiver, so
a CRLF message arrives unchanged (pinned by tests/integration/test_remote_delivery.py).

DSN (RFC 3461 §5.2.1): when the next hop offers DSN, the sender's NOTIFY, ORCPT, RET and
ENVID go onward with MAIL and RCPT and the result says so (`dsn_passed`), so the
scheduler sends no "relayed" notice of its own.

One connection per `deliver` call; there is no connection cache (yet). Commands are not
pipelined (RFC 2920). Nothing blocks the event loop: TLS contexts are built once in the
constructor, DNS goes through aiodns, host names of MX hosts through the loop's resolver.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiosmtplib
from aiosmtplib import SMTPResponse
from aiosmtplib.email import parse_address

from cxkernel.config import RelayConfig, parse_hostport
from mailrelay.delivery.mx import DnsFailure, MXResolver
from mailrelay.smtp.command import xtext_encode

__all__ = ["RcptResult", "RemoteDelivery", "message_needs"]

log = logging.getLogger(__name__)

Status = Literal["ok", "temp", "perm"]

_HIGH = re.compile(rb"[\x80-\xff]")
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True)
class RcptResult:
    """The outcome for one recipient, with the reply that explains it (for the DSN)."""

    recipient: str
    status: Status
    code: int
    enhanced: str
    text: str
    remote_mta: str = ""  # host that answered, for the DSN Remote-MTA field
    dsn_passed: bool = False  # NOTIFY/ORCPT went onward: the next hop reports (RFC 3461)

    @property
    def diagnostic(self) -> str:
        """RFC 3464 §2.3.6 Diagnostic-Code value, e.g. ``smtp; 550 5.1.1 no such user``."""
        return f"smtp; {self.code} {self.enhanced} {self.text}"


@dataclass(frozen=True)
class MessageNeeds:
    """What a message requires of the peer, found once per delivery (no parsing)."""

    eight_bit: bool       # any byte >= 0x80: BODY=8BITMIME (RFC 6152)
    utf8_headers: bool    # 8-bit header section: request SMTPUTF8 when offered (RFC 6532)


def message_needs(raw: bytes) -> MessageNeeds:
    """Scan `raw` once for 8-bit bytes, in the header section and anywhere."""
    if _HIGH.search(raw) is None:
        return MessageNeeds(False, False)
    m = _HEADER_END.search(raw)
    head = raw[: m.start()] if m else raw
    return MessageNeeds(True, _HIGH.search(head) is not None)


class _SessionFailure(Exception):
    """A failure that applies to every recipient still undecided in this attempt."""

    def __init__(self, status: Status, code: int, enhanced: str, text: str, *,
                 remote_mta: str = "", try_next: bool = False) -> None:
        super().__init__(text)
        self.status, self.code, self.enhanced, self.text = status, code, enhanced, text
        self.remote_mta, self.try_next = remote_mta, try_next

    def result(self, rcpt: str) -> RcptResult:
        return RcptResult(rcpt, self.status, self.code, self.enhanced, self.text, self.remote_mta)


def _status(code: int) -> Status:
    if 200 <= code < 300:
        return "ok"
    return "perm" if 500 <= code < 600 else "temp"  # anything unexpected is temporary


def _split_reply(code: int, message: str) -> tuple[str, str]:
    """(enhanced, text) from a reply; synthesise X.0.0 when absent (RFC 3463 §2)."""
    text = " ".join(message.split())
    m = _ENHANCED.match(text)
    if m and m.group(1) == str(code)[0]:  # RFC 3463 §2: class must match the reply code
        return f"{m.group(1)}.{m.group(2)}.{m.group(3)}", text[m.end():]
    klass = str(code)[0] if str(code)[0] in "245" else "4"
    return f"{klass}.0.0", text


def _from_reply(rcpt: str, code: int, message: str, host: str) -> RcptResult:
    enhanced, text = _split_reply(code, message)
    return RcptResult(rcpt, _status(code), code, enhanced, text, host)


def _session_from_reply(code: int, message: str, host: str, *, try_next: bool,
                        prefix: str = "") -> _SessionFailure:
    enhanced, text = _split_reply(code, message)
    return _SessionFailure(_status(code) if code >= 400 else "temp", code, enhanced,
                           prefix + text, remote_mta=host, try_next=try_next)


class RemoteDelivery:
    """Deliver to a smarthost (`relay.smarthost`) or, when none is set, by MX.

    TLS: STARTTLS is used when the peer offers it and `relay.starttls` is on; with
    `relay.require_tls` a peer without STARTTLS (or a failed handshake) is a temporary
    failure. The smarthost's certificate is verified when `relay.verify_tls`; MX peers get
    opportunistic TLS (RFC 7435, unverified) unless `require_tls` and `verify_tls` are both
    set. AUTH (smarthost only, when `relay.username` is set) is only sent over TLS
    (RFC 4954 §4: credentials are not sent in clear text); the password is never logged.

    `mx_port` is the port used for MX hosts (25; tests point it at a local sink).
    """

    def __init__(self, relay: RelayConfig, helo_name: str, resolver: MXResolver | None = None,
                 timeout: float = 60, *, mx_port: int = 25,
                 data_timeout: float | None = None) -> None:
        self._relay = relay
        self._helo = helo_name
        self._resolver = resolver
        self._timeout = timeout
        # RFC 5321 §4.5.3.2.6: wait at least 10 minutes for the reply to the final ".".
        self._data_timeout = data_timeout if data_timeout is not None else max(timeout, 600.0)
        self._mx_port = mx_port
        self._smarthost = parse_hostport(relay.smarthost) if relay.smarthost else None
        self._opportunistic = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._opportunistic.check_hostname = False
        self._opportunistic.verify_mode = ssl.CERT_NONE
        verify = relay.verify_tls and (self._smarthost is not None or relay.require_tls)
        # Built here, once: loading the CA store reads files and must not run in the loop.
        self._tls = ssl.create_default_context() if verify else self._opportunistic

    async def deliver(self, sender: str, recipients: list[str], raw: bytes, *,
                      dsn: Any = None,
                      abort: Callable[[], bool] | None = None) -> list[RcptResult]:
        """All recipients share one destination domain (the caller groups them).

        Sends via the smarthost when configured, else by MX (falling back to A/AAAA per
        RFC 5321 §5.1), trying MX hosts in preference order; STARTTLS when offered (required
        if relay.require_tls), AUTH to the smarthost when a username is set; per-recipient
        RCPT results; a DATA failure applies to all accepted recipients; connection, DNS
        and timeout errors are temporary (4.4.x); 5xx replies are permanent. `raw` is sent
        unchanged apart from CRLF line endings and dot-stuffing.

        `abort` is asked before MAIL and again before DATA (the queue lease was lost to
        another node): when it says so, the transaction is reset and the recipients come
        back as temporary failures, so the message is not sent twice.
        """
        if not recipients:
            return []
        if sender and not _mailbox_ok(sender):
            return [RcptResult(r, "perm", 553, "5.1.7", "bad sender address syntax")
                    for r in recipients]
        bad = {r: RcptResult(r, "perm", 553, "5.1.3", "bad recipient address syntax")
               for r in recipients if not _mailbox_ok(r)}
        if bad:
            good = [r for r in recipients if r not in bad]
            done = dict(bad)
            if good:
                done.update((x.recipient, x) for x in await self.deliver(sender, good, raw,
                                                                          dsn=dsn, abort=abort))
            return [done[r] for r in recipients]
        needs = message_needs(raw)
        try:
            hosts = await self._hosts(recipients[0])
        except DnsFailure as exc:
            return [RcptResult(r, "temp" if exc.temporary else "perm", exc.smtp_code,
                               exc.smtp_enhanced, exc.public) for r in recipients]
        last = _SessionFailure("temp", 451, "4.4.0", "no host to deliver to")
        for host, port in hosts:
            try:
                return await self._attempt(host, port, sender, recipients, raw, needs, dsn,
                                           abort)
            except _SessionFailure as exc:
                last = exc
            except Exception:  # a bug must not lose mail: defer, never bounce
                log.exception("unexpected error delivering to %s:%d", host, port)
                last = _SessionFailure("temp", 451, "4.3.0", "internal error, will retry")
            log.info("delivery to %s:%d failed: %s %s %s", host, port, last.code,
                     last.enhanced, last.text)
            if not last.try_next:
                break
        return [last.result(r) for r in recipients]

    async def _hosts(self, rcpt: str) -> list[tuple[str, int]]:
        if self._smarthost is not None:
            return [self._smarthost]
        domain = rcpt.rpartition("@")[2].strip().rstrip(".")
        if domain.startswith("[") and domain.endswith("]"):  # RFC 5321 §4.1.3 address literal
            literal = domain[1:-1]
            return [(literal[5:] if literal.lower().startswith("ipv6:") else literal,
                     self._mx_port)]
        if not domain.isascii():
            try:
                domain = domain.encode("idna").decode("ascii")
            except UnicodeError:
                raise DnsFailure("bad destination domain", smtp_code=550,
                                 smtp_enhanced="5.1.2", temporary=False) from None
        if self._resolver is None:
            self._resolver = MXResolver()
        mx = await self._resolver.lookup(domain)
        # RFC 5321 §5.1: try in preference order; randomise among equal preferences.
        ordered = sorted(mx, key=lambda pm: (pm[0], random.random()))
        return [(host, self._mx_port) for _, host in ordered]

    def _label(self, host: str) -> str:
        return "the smarthost" if self._smarthost is not None else host

    async def _attempt(self, host: str, port: int, sender: str, recipients: list[str],
                       raw: bytes, needs: MessageNeeds, dsn: Any = None,
                       abort: Callable[[], bool] | None = None) -> list[RcptResult]:
        smtp = aiosmtplib.SMTP(hostname=host, port=port, local_hostname=self._helo,
                               timeout=self._timeout, start_tls=False, use_tls=False)
        try:
            await self._open(smtp, host)
            return await self._transaction(smtp, host, sender, recipients, raw, needs, dsn,
                                           abort)
        finally:
            smtp.close()

    async def _open(self, smtp: aiosmtplib.SMTP, host: str) -> None:
        """Connect, EHLO, STARTTLS and AUTH; any failure here may move on to the next host."""
        relay = self._relay
        try:
            await smtp.connect()
        except aiosmtplib.SMTPConnectResponseError as exc:  # greeting other than 220
            raise _session_from_reply(exc.code, exc.message, host, try_next=True) from None
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            # RFC 3463 X.4.1: no answer from host.
            raise _SessionFailure("temp", 451, "4.4.1", f"connect to {self._label(host)} "
                                  f"failed: {_reason(exc)}", try_next=True) from None
        try:
            await self._hello(smtp)
            if relay.starttls or relay.require_tls:
                if smtp.supports_extension("starttls"):
                    try:
                        await smtp.starttls(tls_context=self._tls, server_hostname=host)
                    except aiosmtplib.SMTPResponseException as exc:
                        if relay.require_tls or not smtp.is_connected:
                            raise _session_from_reply(exc.code, exc.message, host, try_next=True,
                                                      prefix="STARTTLS refused: ") from None
                        # RFC 3207 §4.1: a refused STARTTLS leaves the clear session usable.
                        log.info("%s refused STARTTLS (%s); continuing without TLS",
                                 host, exc.code)
                    except (ssl.SSLError, ssl.CertificateError) as exc:
                        raise _SessionFailure("temp", 451, "4.7.5", "TLS handshake with "
                                              f"{self._label(host)} failed: {_reason(exc)}",
                                              remote_mta=host, try_next=True) from None
                    else:
                        await self._hello(smtp)  # RFC 3207 §4.2: forget pre-TLS capabilities
                elif relay.require_tls:
                    # RFC 3207 §4: a client that requires TLS must not send mail in clear.
                    raise _SessionFailure("temp", 451, "4.7.10", "TLS is required but "
                                          f"{self._label(host)} does not offer STARTTLS",
                                          remote_mta=host, try_next=True)
            if self._smarthost is not None and relay.username:
                await self._auth(smtp, host)
        except aiosmtplib.SMTPResponseException as exc:
            raise _session_from_reply(exc.code, exc.message, host, try_next=True) from None
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            raise _SessionFailure("temp", 451, "4.4.2", f"lost connection with "
                                  f"{self._label(host)}: {_reason(exc)}", remote_mta=host,
                                  try_next=True) from None

    async def _hello(self, smtp: aiosmtplib.SMTP) -> None:
        try:
            await smtp.ehlo()
        except aiosmtplib.SMTPHeloError:
            if not smtp.is_connected:
                raise
            await smtp.helo()  # RFC 5321 §3.2: fall back to HELO

    async def _auth(self, smtp: aiosmtplib.SMTP, host: str) -> None:
        if smtp.get_transport_info("sslcontext") is None:
            # RFC 4954 §4: never send credentials over an unprotected connection.
            raise _SessionFailure("temp", 451, "4.7.10", "refusing to authenticate to the "
                                  "smarthost without TLS", remote_mta=host)
        try:
            await smtp.login(self._relay.username, self._relay.password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            # Our credentials, not the message: temporary so that a fixed config delivers.
            raise _SessionFailure("temp", 451, "4.7.8", "authentication to the smarthost "
                                  f"failed: {exc.code}", remote_mta=host) from None
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPServerDisconnected,
                aiosmtplib.SMTPTimeoutError):
            raise
        except aiosmtplib.SMTPException:  # AUTH not offered, no usable mechanism
            raise _SessionFailure("temp", 451, "4.7.8", "the smarthost offers no usable AUTH "
                                  "mechanism", remote_mta=host) from None

    async def _transaction(self, smtp: aiosmtplib.SMTP, host: str, sender: str,
                           recipients: list[str], raw: bytes,
                           needs: MessageNeeds, dsn: Any = None,
                           abort: Callable[[], bool] | None = None) -> list[RcptResult]:
        results: dict[str, RcptResult] = {}

        def perm(rcpt: str, code: int, enhanced: str, text: str) -> RcptResult:
            return RcptResult(rcpt, "perm", code, enhanced, text, host)

        # Refuse what the peer cannot take rather than change the bytes (signatures).
        ext = smtp.esmtp_extensions
        utf8_ok = "smtputf8" in ext
        limit = ext.get("size", "")
        if limit.isdigit() and int(limit) > 0 and len(raw) > int(limit):
            # RFC 1870 §6.2: the client should not send a message larger than SIZE.
            return [perm(r, 552, "5.3.4", f"message size {len(raw)} exceeds the limit "
                         f"{limit} of {host}") for r in recipients]
        if needs.eight_bit and "8bitmime" not in ext:
            # RFC 6152 §3: 8-bit data only to a server that offers 8BITMIME.
            return [perm(r, 554, "5.6.3", f"{host} does not support 8BITMIME and the "
                         "message has 8-bit content") for r in recipients]
        if not sender.isascii() and not utf8_ok:
            # RFC 6531 §3.2 / RFC 6533 §3: UTF-8 envelope only with SMTPUTF8.
            return [perm(r, 553, "5.6.7", f"{host} does not support SMTPUTF8 (non-ASCII "
                         "sender address)") for r in recipients]
        todo: list[str] = []
        for r in recipients:
            if not r.isascii() and not utf8_ok:
                results[r] = perm(r, 553, "5.6.7", f"{host} does not support SMTPUTF8 "
                                  "(non-ASCII recipient address)")
            else:
                todo.append(r)
        use_utf8 = utf8_ok and (not sender.isascii() or not all(r.isascii() for r in todo)
                                or needs.utf8_headers)
        options = []
        if "size" in ext:
            options.append(f"SIZE={len(raw)}")  # RFC 1870 §3
        if needs.eight_bit:
            options.append("BODY=8BITMIME")  # RFC 6152 §2
        if use_utf8:
            options.append("SMTPUTF8")  # RFC 6531 §3.4
        enc = "utf-8" if use_utf8 else "ascii"
        rcpt_options: dict[str, list[str]] = {}
        if dsn is not None and "dsn" in ext:
            # RFC 3461 §5.2.1: pass the request on to a next hop that offers DSN.
            if dsn.ret:
                options.append(f"RET={dsn.ret}")
            if dsn.envid:
                options.append(f"ENVID={xtext_encode(dsn.envid)}")
            for r in todo:
                opts = [f"NOTIFY={dsn.notify[r]}"] if dsn.notify.get(r) else []
                orig = dsn.orcpt.get(r)
                if orig and orig.isascii():
                    opts.append(f"ORCPT=rfc822;{xtext_encode(orig)}")  # RFC 3461 §4.2
                elif orig:  # RFC 6533 §3: utf-8-addr-xtext
                    opts.append("ORCPT=utf-8;" + "".join(
                        c if 0x21 <= ord(c) <= 0x7E and c not in "+=\\" else f"\\x{{{ord(c):X}}}"
                        for c in orig))
                rcpt_options[r] = opts

        try:
            if todo:
                await self._mail_rcpt_data(smtp, host, sender, todo, raw, options, enc, results,
                                           rcpt_options, abort)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            lost = _SessionFailure("temp", 451, "4.4.2", f"lost connection with "
                                   f"{self._label(host)}: {_reason(exc)}", remote_mta=host)
            for r in todo:
                if r not in results:  # accepted at RCPT but no reply to DATA: deferred
                    results[r] = lost.result(r)
        else:
            try:
                await smtp.quit(timeout=min(self._timeout, 10))
            except (aiosmtplib.SMTPException, OSError):
                pass
        return [results[r] for r in recipients]

    async def _mail_rcpt_data(self, smtp: aiosmtplib.SMTP, host: str, sender: str,
                              todo: list[str], raw: bytes, options: list[str], enc: str,
                              results: dict[str, RcptResult],
                              rcpt_options: dict[str, list[str]] | None = None,
                              abort: Callable[[], bool] | None = None) -> None:
        """MAIL, RCPT per recipient, DATA; fills `results` with final outcomes only."""
        if abort is not None and abort():
            for r in todo:
                results[r] = RcptResult(r, "temp", 451, "4.4.0", "attempt abandoned", host)
            return
        try:
            await smtp.mail(sender, options=options, encoding=enc)
        except ValueError:  # aiosmtplib refuses a mailbox that would break the command line
            for r in todo:
                results[r] = RcptResult(r, "perm", 553, "5.1.7", "bad sender address syntax",
                                        host)
            return
        except aiosmtplib.SMTPSenderRefused as exc:
            if exc.code >= 500:
                for r in todo:
                    results[r] = _from_reply(r, exc.code, exc.message, host)
                return
            # 4xx (or odd) at MAIL: nothing decided yet, another MX may do better.
            raise _session_from_reply(exc.code, exc.message, host, try_next=True) from None
        accepted: list[str] = []
        for i, r in enumerate(todo):
            try:
                resp = await smtp.rcpt(r, options=(rcpt_options or {}).get(r) or None,
                                       encoding=enc)
            except ValueError:  # RFC 5321 §4.1.2: not a mailbox (spaces, controls, <>)
                results[r] = RcptResult(r, "perm", 553, "5.1.3",
                                        "bad recipient address syntax", host)
                continue
            except aiosmtplib.SMTPRecipientRefused as exc:
                results[r] = _from_reply(r, exc.code, exc.message, host)
                if exc.code == 421:  # RFC 5321 §3.8: the server is closing the channel
                    for rest in accepted + todo[i + 1:]:
                        results[rest] = _from_reply(rest, exc.code, exc.message, host)
                    return
                continue
            if resp.code == 251:  # RFC 5321 §3.4: "will forward" is an acceptance too
                log.debug("%s: %s", r, resp.message)
            accepted.append(r)  # not final: only the reply to DATA decides
        if not accepted:
            # RFC 5321 §3.3: no valid recipients -> no DATA.
            try:
                await smtp.rset()
            except aiosmtplib.SMTPResponseException:
                pass
            return
        if abort is not None and abort():
            # The queue lease went to another node: stop before DATA, not after the dot.
            try:
                await smtp.rset()
            except aiosmtplib.SMTPResponseException:
                pass
            for r in accepted:
                results[r] = RcptResult(r, "temp", 451, "4.4.0", "attempt abandoned", host)
            return
        try:
            resp = await smtp.data(raw, timeout=self._data_timeout)
        except aiosmtplib.SMTPDataError as exc:
            resp = SMTPResponse(exc.code, exc.message)
        # One reply to the final "." covers every accepted recipient (RFC 5321 §4.1.1.4).
        for r in accepted:
            res = _from_reply(r, resp.code, resp.message, host)
            if rcpt_options and res.status == "ok":
                res = dataclasses.replace(res, dsn_passed=True)
            results[r] = res


def _mailbox_ok(addr: str) -> bool:
    """A bare mailbox that goes on the command line unchanged (RFC 5321 §4.1.2).

    aiosmtplib parses addresses with email.utils, which silently drops comments and folding
    white space ("x\\r\\nRSET@d" would become "xRSET@d"): anything it would rewrite is
    refused here instead of being delivered to a different mailbox.
    """
    if not addr or any(ord(c) < 0x20 or ord(c) == 0x7F for c in addr):
        return False
    try:
        return parse_address(addr) == addr
    except ValueError:
        return False


def _reason(exc: BaseException) -> str:
    """A short public reason for a network error: no addresses, ports or tracebacks."""
    root: BaseException = exc
    while root.__cause__ is not None:
        root = root.__cause__
    if isinstance(root, TimeoutError | aiosmtplib.SMTPTimeoutError):
        return "timed out"
    if isinstance(root, ssl.SSLError):
        return str(root.reason or "TLS error").replace("_", " ").lower()
    if isinstance(root, OSError) and root.errno:
        return os.strerror(root.errno)  # not str(root): asyncio puts the address in it
    if isinstance(root, aiosmtplib.SMTPServerDisconnected | ConnectionError):
        return "connection closed"
    return type(root).__name__
