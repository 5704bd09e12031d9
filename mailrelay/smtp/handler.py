"""The aiosmtpd handler: async hooks that apply our policy and hand DATA to `submit()`.

One handler instance per listener role:
  * "smtp" (port 25 role): mail for our domains from anyone; relay only for trusted
    networks; no AUTH; bare CR/LF/NUL in DATA refused (550 5.6.0). An untrusted client may
    not use our domain in MAIL FROM or From: and may not post to lists (550 5.7.1).
  * "submission"/"submissions" (587/465 roles): AUTH required (PLAIN, LOGIN, only over
    TLS), sender must be the user's own address or alias, bare line endings normalised.
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
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session

from cxkernel.errors import CxError
from cxkernel.metrics import Metrics
from directory.auth import Authenticator
from mailrelay.addressbook import AddressBook
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
                 metrics: Metrics | None = None,
                 srs_reverse: Callable[[str], Awaitable[str | None]] | None = None) -> None:
        self.policy = policy
        self.srs_reverse = srs_reverse  # Sieve redirects' SRS0 addresses (issue 16)
        self.book = book
        self.submitter = submitter
        self.auth = auth
        self.metrics = metrics or Metrics()
        # per connection (the protocol object outlives a STARTTLS session reset)
        self._budgets: weakref.WeakKeyDictionary[SMTP, ErrorBudget] = weakref.WeakKeyDictionary()

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
        and retries), never leak internals in the reply."""
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
        extra = ["250-PIPELINING", "250-ENHANCEDSTATUSCODES"]
        out = out[:1] + extra + out[1:]
        out[-1] = "250 " + out[-1][4:]
        for i in range(len(out) - 1):
            out[i] = "250-" + out[i][4:]
        return out

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        if self._closed(server):
            return "421 4.7.0 Too many errors, closing connection"
        for opt in mail_options:
            key = opt.split("=", 1)[0].upper()
            if key not in ("BODY", "SMTPUTF8", "SIZE"):
                return f"555 5.5.4 MAIL parameter {key} not supported"
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
        envelope.routes = {}  # type: ignore[attr-defined]
        return "250 2.1.0 Sender ok"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if self._closed(server):
            return "421 4.7.0 Too many errors, closing connection"
        if rcpt_options:
            return f"555 5.5.4 RCPT parameter {rcpt_options[0].split('=')[0]} not supported"
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
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        envelope.routes[address] = route  # type: ignore[attr-defined]
        return "250 2.1.5 Recipient ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self._closed(server):
            return "421 4.7.0 Too many errors, closing connection"
        data = envelope.original_content or b""
        user = self._auth_user(session)
        try:
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
                         getattr(envelope, "routes", None))
        try:
            result = await self.submitter.submit(sub)
        except CxError as exc:
            log.error("submit failed from=<%s>: %s", envelope.mail_from, exc.reason)
            return exc.smtp_reply()
        self.metrics.inc("smtp_messages_received_total", listener=self.policy.role)
        self._budget(server).reset()
        return f"250 2.0.0 Ok: queued as {result.queue_id}"

class SubmissionHandler(MailHandler):
    """Submission roles: the same hooks plus AUTH PLAIN and LOGIN (aiosmtpd offers the
    handler's `auth_*` methods; it only offers them over TLS unless told otherwise)."""

    # ---- AUTH (RFC 4954), only offered where the handler has an authenticator ----------
    async def _check(self, server: SMTP, username: str, password: str) -> AuthResult:
        assert self.auth is not None
        res = await self.auth.authenticate(username, password, protocol="smtp",
                                           remote=self._peer_ip(server.session))
        if res.ok and res.account is not None:
            return AuthResult(success=True, auth_data=res.account.address)
        self.metrics.inc("auth_failures_total", protocol="smtp")
        return AuthResult(success=False, handled=False,
                          message="535 5.7.8 Authentication credentials invalid")

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) == 1:
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                return AuthResult(success=False, handled=False, message="501 5.5.2 Can't decode base64")
        assert isinstance(blob, bytes)
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            return AuthResult(success=False, handled=False, message="501 5.5.2 Malformed AUTH PLAIN")
        authz, user, pw = (p.decode("utf-8", "replace") for p in parts)
        if authz and authz.lower() != user.lower():
            return AuthResult(success=False, handled=False,
                              message="535 5.7.8 Authentication credentials invalid")
        return await self._check(server, user, pw)

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) == 2:
            try:
                user_b = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                return AuthResult(success=False, handled=False, message="501 5.5.2 Can't decode base64")
        else:
            got = await server.challenge_auth("Username:")
            if got is MISSING:
                return AuthResult(success=False, handled=True)
            assert isinstance(got, bytes)
            user_b = got
        pw_b = await server.challenge_auth("Password:")
        if pw_b is MISSING:
            return AuthResult(success=False, handled=True)
        assert isinstance(pw_b, bytes)
        return await self._check(server, user_b.decode("utf-8", "replace"),
                                 pw_b.decode("utf-8", "replace"))


def handler_for(policy: ListenerPolicy, **kw: Any) -> MailHandler:
    return SubmissionHandler(policy, **kw) if policy.submission else MailHandler(policy, **kw)

