"""The aiosmtpd handler: async hooks that apply our policy and hand DATA to `submit()`.

One handler instance per listener role:
  * "smtp" (port 25 role): mail for our domains from anyone; relay only for trusted
    networks; no AUTH; bare CR/LF/NUL in DATA refused (550 5.6.0). An untrusted client may
    not use our domain in MAIL FROM or From: and may not post to lists (550 5.7.1); mail
    from outside (not a trusted network) checked by `inbound_auth` (SPF, DKIM, ARC, DMARC)
    and stamped with Authentication-Results; DMARC reject -> 550 5.7.1, quarantine -> Junk.
  * "submission"/"submissions" (587/465 roles): AUTH required (PLAIN, LOGIN, SCRAM, only
    over TLS), sender must be the user's own address or alias, bare line endings normalised.
Every refusal carries its enhanced status code (RFC 2034, RFC 3463). Refusals are counted
per connection: past `soft_error_limit` each one waits `error_sleep_time`, at
`hard_error_limit` the session ends with 421 4.7.0 (no harvesting of the directory).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import logging
import ssl
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session, TLSSetupException

from cxkernel.errors import CxError
from cxkernel.metrics import Metrics
from directory.auth import Authenticator
from directory.sasl import Challenge, Failure, SaslServer, Success
from mailrelay.addressbook import AddressBook
from mailrelay.inbound_auth.checker import InboundAuth
from mailrelay.smtp.command import DsnError, parse_notify, parse_orcpt, xtext_decode
from mailrelay.smtp.policy import (
    ErrorBudget,
    PolicyError,
    Route,
    check_data,
    check_display_names,
    check_foreign_from_header,
    check_foreign_sender,
    check_from_header,
    check_list_sender,
    check_sender,
    route_recipient,
)
from mailrelay.submit import ClientInfo, Submission, Submitter

log = logging.getLogger("cxgw.smtp")


@dataclass(frozen=True)
class ListenerPolicy:
    role: str  # smtp | submission | submissions
    max_recipients: int
    trusted_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    open_lists: frozenset[str] = field(default_factory=frozenset)
    large_alias_members: int = 10
    soft_error_limit: int = 10
    hard_error_limit: int = 20
    error_sleep_time: float = 1.0

    @property
    def submission(self) -> bool:
        return self.role != "smtp"


class MailHandler:
    """aiosmtpd hooks for one listener role."""

    def __init__(self, policy: ListenerPolicy, book: Callable[[], AddressBook],
                 submitter: Submitter, auth: Authenticator | None,
                 metrics: Metrics | None = None, inbound: InboundAuth | None = None,
                 srs_reverse: Callable[[str], Awaitable[str | None]] | None = None) -> None:
        self.policy = policy
        self.srs_reverse = srs_reverse  # Sieve redirects' SRS0 addresses (issue 16)
        self.book = book
        self.submitter = submitter
        self.auth = auth
        self.metrics = metrics or Metrics()
        # per connection (the protocol object outlives a STARTTLS session reset)
        self._budgets: weakref.WeakKeyDictionary[SMTP, ErrorBudget] = weakref.WeakKeyDictionary()
        self.inbound = inbound  # port-25 role only

    # ---- helpers ---------------------------------------------------------------------
    def _peer_ip(self, session: Session | None) -> str:
        peer = session.peer if session is not None else None
        return peer[0] if isinstance(peer, tuple) else str(peer or "")

    def _trusted(self, session: Session) -> bool:
        try:
            ip = ipaddress.ip_address(self._peer_ip(session))
        except ValueError:
            return False
        return any(ip in net for net in self.policy.trusted_networks)

    def _auth_user(self, session: Session) -> str | None:
        return session.auth_data if session.authenticated and isinstance(session.auth_data, str) else None

    def _local_sender(self, session: Session) -> bool:
        """Authenticated, or a trusted network (port 25 role): vouched for by us."""
        return self._auth_user(session) is not None or self._trusted(session)

    def _budget(self, server: SMTP) -> ErrorBudget:
        budget = self._budgets.get(server)
        if budget is None:
            p = self.policy
            budget = ErrorBudget(p.soft_error_limit, p.hard_error_limit, p.error_sleep_time)
            self._budgets[server] = budget
        return budget

    async def _refuse(self, server: SMTP, reply: str) -> str:
        """Answer a refusal, counted against the session's error budget: past the soft
        limit after a delay; at the hard limit followed by 421 (and the close)."""
        delay, close = self._budget(server).record()
        if delay:
            await asyncio.sleep(delay)
        if not close:
            return reply
        self.metrics.inc("smtp_error_limit_closed_total", listener=self.policy.role)
        log.info("closing session client=%s: too many errors", self._peer_ip(server.session))
        await server.push(reply)
        # RFC 5321 §3.8: 421 and close; CxSMTP.push closes the connection after a 421.
        return "421 4.7.0 Too many errors, closing connection"

    def _closed(self, server: SMTP) -> bool:
        budget = self._budgets.get(server)
        return budget is not None and budget.errors >= budget.hard

    async def handle_exception(self, error: Exception) -> str:
        """A bug in a hook: log it, answer a temporary failure (the client keeps the message
        and retries), never leak internals in the reply. A failed STARTTLS handshake or a
        peer gone mid-command is the client's doing: one INFO line, no internal error."""
        if isinstance(error, TLSSetupException | ssl.SSLError | ConnectionError):
            cause = error.__cause__ or error.__context__ or error
            what = "connection lost" if isinstance(error, ConnectionError) else "tls failure"
            log.info("smtp %s: %s", what, getattr(cause, "reason", None) or cause)
            return "421 4.7.0 TLS or connection failure"
        log.error("SMTP session error: %r", error, exc_info=error)
        self.metrics.inc("smtp_internal_errors_total")
        return "451 4.3.0 Internal error; try again later"

    # ---- hooks -----------------------------------------------------------------------
    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        out = [r for r in responses if r not in ("250 HELP", "250-HELP")
               and r.rstrip() not in ("250-AUTH", "250 AUTH")]
        # RFC 2920 PIPELINING works in aiosmtpd (it reads commands as they come);
        # RFC 2034 ENHANCEDSTATUSCODES: CxSMTP.push adds a code to every reply.
        # RFC 3461 DSN, RFC 3030 CHUNKING (BDAT, CxSMTP.smtp_BDAT) and BINARYMIME.
        extra = ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250-DSN", "250-CHUNKING",
                 "250-BINARYMIME"]
        out = out[:1] + extra + out[1:]
        out[-1] = "250 " + out[-1][4:]
        for i in range(len(out) - 1):
            out[i] = "250-" + out[i][4:]
        return out

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        if self._closed(server):
            return "421 4.7.0 Too many errors, closing connection"
        params: dict[str, str | None] = {}
        for opt in mail_options:
            key, eq, value = opt.partition("=")
            params[key] = value if eq else None
        body = (params.pop("BODY", None) or "7BIT").upper()
        if body not in ("7BIT", "8BITMIME", "BINARYMIME"):  # RFC 6152 §2, RFC 3030 §3
            return "501 5.5.4 BODY must be 7BIT, 8BITMIME or BINARYMIME"
        smtputf8 = "SMTPUTF8" in params
        if params.pop("SMTPUTF8", None) is not None:
            return "501 5.5.4 SMTPUTF8 takes no value"  # RFC 6531 §3.4
        size = params.pop("SIZE", None)
        if size is not None:
            if not size.isdigit():
                return "501 5.5.4 SIZE needs a number"
            if server.data_size_limit and int(size) > server.data_size_limit:
                return "552 5.3.4 Message size exceeds the limit"  # RFC 1870 §6.1
        ret = params.pop("RET", None)
        envid = params.pop("ENVID", None)
        try:
            if "RET" in mail_options or (ret is not None and ret.upper() not in ("FULL", "HDRS")):
                raise DsnError("RET must be FULL or HDRS")  # RFC 3461 §4.3
            if envid is not None:
                envid = xtext_decode(envid)  # RFC 3461 §4.4: at most 100 characters
                if not envid or len(envid) > 100 or not envid.isprintable() or not envid.isascii():
                    raise DsnError("ENVID must be 1 to 100 printable characters")
        except DsnError as exc:
            return f"501 5.5.4 {exc}"
        if params:
            return f"555 5.5.4 MAIL parameter {next(iter(params))} not supported"
        if not smtputf8 and not address.isascii():
            return "553 5.6.7 Non-ASCII address needs SMTPUTF8"  # RFC 6531 §3.4
        try:
            if address and address.startswith("@"):
                raise PolicyError(553, "5.1.7", "Source routes are not accepted")
            check_sender(address, self._auth_user(session), self.book())
            if not self.policy.submission and not self._local_sender(session):
                check_foreign_sender(address, self.book())
        except PolicyError as exc:
            self.metrics.inc("smtp_mail_refused_total", code=str(exc.smtp_code))
            log.info("refused MAIL from=<%s> client=%s: %s", address, self._peer_ip(session), exc.reason)
            return await self._refuse(server, exc.smtp_reply())
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.smtp_utf8 = smtputf8
        envelope.routes = {}  # type: ignore[attr-defined]
        envelope.body_type = body  # type: ignore[attr-defined]
        envelope.dsn_ret = ret.upper() if ret else None  # type: ignore[attr-defined]
        envelope.dsn_envid = envid  # type: ignore[attr-defined]
        envelope.rcpt_dsn = {}  # type: ignore[attr-defined]
        return "250 2.1.0 Sender ok"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if self._closed(server):
            return "421 4.7.0 Too many errors, closing connection"
        params: dict[str, str | None] = {}
        for opt in rcpt_options:
            key, eq, value = opt.partition("=")
            params[key] = value if eq else None
        notify, orcpt = params.pop("NOTIFY", None), params.pop("ORCPT", None)
        try:
            if "NOTIFY" in rcpt_options or "ORCPT" in rcpt_options:
                raise DsnError("NOTIFY and ORCPT need a value")
            notify = parse_notify(notify) if notify is not None else None  # RFC 3461 §4.1
            orig = parse_orcpt(orcpt)[1] if orcpt is not None else None  # RFC 3461 §4.2
        except DsnError as exc:
            return f"501 5.5.4 {exc}"
        if params:
            return f"555 5.5.4 RCPT parameter {next(iter(params))} not supported"
        if not envelope.smtp_utf8 and not address.isascii():
            return "553 5.6.7 Non-ASCII address needs SMTPUTF8"
        if address.lower() == "postmaster":
            # RFC 5321 §4.1.1.3: <Postmaster> without a domain is ours.
            address = f"postmaster@{self.book().domain}"
        if len(envelope.rcpt_tos) >= self.policy.max_recipients:
            return "452 4.5.3 Too many recipients"
        local = self._local_sender(session)
        route_to, relay = address, local
        if self.srs_reverse is not None and address[:5].upper() == "SRS0=":
            # A bounce to a message a Sieve redirect forwarded: back to its original sender
            # (only a valid, unexpired SRS0 address of ours; anything else is unknown here).
            back = await self.srs_reverse(address)
            if back is not None:
                route_to, relay = back, True
        try:
            route: Route = route_recipient(route_to, self.book(), relay_allowed=relay)
            check_list_sender(route, local_sender=local, open_lists=self.policy.open_lists,
                              large_alias_members=self.policy.large_alias_members)
        except PolicyError as exc:
            self.metrics.inc("smtp_rcpt_refused_total", code=str(exc.smtp_code))
            log.info("refused RCPT to=<%s> from=<%s> client=%s: %s", address,
                     envelope.mail_from, self._peer_ip(session), exc.reason)
            return await self._refuse(server, exc.smtp_reply())
        if route.transport == "remote" and getattr(envelope, "body_type", "") == "BINARYMIME":
            # RFC 3030 §3: we do not convert binary content for a next hop.
            return "554 5.6.3 Binary content is not relayed; send it as 8BITMIME"
        if not _room_for_declared_size(route, envelope, self.book()):
            # RFC 1870 §6.1: no room for a message of the declared SIZE for this recipient
            # (a hint: the delivery checks the real size in its transaction, issue 13).
            return "452 4.2.2 Mailbox full for a message of this size"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        envelope.routes[address] = route  # type: ignore[attr-defined]
        if notify or orig:
            envelope.rcpt_dsn[address] = (notify, orig)  # type: ignore[attr-defined]
        return "250 2.1.5 Recipient ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self._closed(server):
            return "421 4.7.0 Too many errors, closing connection"
        data = envelope.original_content or b""
        user = self._auth_user(session)
        binary = getattr(envelope, "body_type", "") == "BINARYMIME"
        try:
            if binary:
                # RFC 3030 §3: binary content is taken as sent (BDAT has no end-of-data
                # sequence to smuggle); only its header section must be CRLF text.
                end = data.find(b"\r\n\r\n")
                check_data(data if end < 0 else data[:end + 4], strict=True)
            else:
                data = check_data(data, strict=not self.policy.submission)
            if self.policy.submission:
                check_from_header(data, user, self.book())
                check_display_names(data, user, self.book())
            elif not self._local_sender(session):
                check_foreign_from_header(data, self.book())
        except PolicyError as exc:
            self.metrics.inc("smtp_data_refused_total", code=str(exc.smtp_code))
            log.info("refused DATA from=<%s> client=%s: %s", envelope.mail_from,
                     self._peer_ip(session), exc.reason)
            return await self._refuse(server, exc.smtp_reply())
        folder = None
        if (self.inbound is not None and user is None and not self._trusted(session)
                and self.inbound.applies(self._peer_ip(session))):
            verdict = await self.inbound.check(data, ip=self._peer_ip(session),
                                               helo=session.host_name or "",
                                               mail_from=envelope.mail_from or "")
            self.metrics.inc("smtp_inbound_auth_total", action=verdict.action)
            if verdict.action in ("reject", "defer"):
                log.info("refused DATA from=<%s> client=%s: inbound authentication: %s",
                         envelope.mail_from, self._peer_ip(session), verdict.reply)
                return verdict.reply
            data = verdict.raw
            if verdict.action == "quarantine":
                folder = "Junk"  # RFC 7489 §6.3 p=quarantine: "treat as suspicious"
        ssl_obj = server.transport.get_extra_info("ssl_object") if server.transport else None
        tls = f"{ssl_obj.version()} {ssl_obj.cipher()[0]}" if ssl_obj else None
        proto = "ESMTP" + ("S" if tls else "") + ("A" if user else "")
        client = ClientInfo(proto, session.host_name or "", self._peer_ip(session),
                            session.peer[0] if isinstance(session.peer, tuple) else "",
                            user, tls)
        # The origin travels explicitly: only authenticated submission is "submission"
        # (and signed); everything from port 25, trusted or not, is "smtp" (never signed).
        sub = Submission(envelope.mail_from or "", list(envelope.rcpt_tos), data, client,
                         "submission" if self.policy.submission and user else "smtp",
                         getattr(envelope, "routes", None),
                         envid=getattr(envelope, "dsn_envid", None),
                         ret=getattr(envelope, "dsn_ret", None),
                         rcpt_dsn=dict(getattr(envelope, "rcpt_dsn", {})), folder=folder)
        try:
            result = await self.submitter.submit(sub)
        except CxError as exc:
            log.error("submit failed from=<%s>: %s", envelope.mail_from, exc.reason)
            return exc.smtp_reply()
        self.metrics.inc("smtp_messages_received_total", listener=self.policy.role)
        self._budget(server).reset()
        return f"250 2.0.0 Ok: queued as {result.queue_id}"

class SubmissionHandler(MailHandler):
    """Submission roles: the same hooks plus AUTH (RFC 4954) through the directory's one
    SASL module: PLAIN, LOGIN, SCRAM-SHA-1/256 and -PLUS (aiosmtpd offers the handler's
    `auth_*` methods, only over TLS)."""

    async def _sasl(self, server: SMTP, args: list[str], mechanism: str) -> AuthResult:
        assert self.auth is not None
        auth = self.auth
        tls = server.transport is not None and \
            server.transport.get_extra_info("ssl_object") is not None
        binding = auth.channel_binding if tls else None
        sasl = SaslServer(mechanism, prepare=auth.username_to_address, binding=binding,
                          plus_offered=binding is not None, final_in_challenge=True)
        initial: bytes | None = None
        if len(args) > 1:  # RFC 4954 §4: initial response, "=" for an empty one
            if args[1] == "=":
                initial = b""
            else:
                try:
                    initial = base64.b64decode(args[1], validate=True)
                except binascii.Error:
                    return AuthResult(success=False, handled=False,
                                      message="501 5.5.2 Can't decode base64")
        step = sasl.start(initial)
        remote = self._peer_ip(server.session)
        while True:
            step = await auth.advance(sasl, step, protocol="smtp", remote=remote)
            if isinstance(step, Challenge):
                got = await server.challenge_auth(step.data)
                if got is MISSING:  # "*" or bad base64: aiosmtpd has answered 501
                    return AuthResult(success=False, handled=True)
                assert isinstance(got, bytes)
                step = sasl.receive(got)
                continue
            if isinstance(step, Success):
                account = sasl.account
                address = getattr(account, "address", step.username)
                return AuthResult(success=True, auth_data=address)
            assert isinstance(step, Failure)
            self.metrics.inc("auth_failures_total", protocol="smtp")
            if step.condition == "temporary":
                return AuthResult(success=False, handled=False,
                                  message="454 4.7.0 Temporary authentication failure")
            if step.condition == "malformed":
                return AuthResult(success=False, handled=False,
                                  message="501 5.5.2 Malformed authentication data")
            return AuthResult(success=False, handled=False,
                              message="535 5.7.8 Authentication credentials invalid")

    # aiosmtpd names a mechanism after the method: "__" becomes "-".
    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._sasl(server, args, "PLAIN")

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._sasl(server, args, "LOGIN")

    async def auth_SCRAM__SHA__1(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._sasl(server, args, "SCRAM-SHA-1")

    async def auth_SCRAM__SHA__256(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._sasl(server, args, "SCRAM-SHA-256")

    async def auth_SCRAM__SHA__1__PLUS(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._sasl(server, args, "SCRAM-SHA-1-PLUS")

    async def auth_SCRAM__SHA__256__PLUS(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._sasl(server, args, "SCRAM-SHA-256-PLUS")


def handler_for(policy: ListenerPolicy, **kw: Any) -> MailHandler:
    return SubmissionHandler(policy, **kw) if policy.submission else MailHandler(policy, **kw)


def _room_for_declared_size(route: Route, envelope: Envelope, book: AddressBook) -> bool:
    """False when the MAIL SIZE= parameter already says a local mailbox cannot take it."""
    exp = route.expansion
    if route.transport != "local" or exp is None or exp.kind != "account":
        return True
    size = next((int(o[5:]) for o in envelope.mail_options
                 if o.upper().startswith("SIZE=") and o[5:].isdigit()), 0)
    acct = book.accounts.get(route.recipient)
    return size == 0 or acct is None or acct.quota <= 0 or acct.used + size <= acct.quota
