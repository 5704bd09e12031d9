"""The aiosmtpd handler: async hooks that apply our policy and hand DATA to `submit()`.

One handler instance per listener role:
  * "smtp" (port 25 role): mail for our domains from anyone; relay only for trusted
    networks; no AUTH; bare CR/LF/NUL in DATA refused (550 5.6.0).
  * "submission"/"submissions" (587/465 roles): AUTH required (PLAIN, LOGIN, SCRAM, only
    over TLS), sender must be the user's own address or alias, bare line endings normalised.
Every refusal carries its enhanced status code (RFC 2034, RFC 3463).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session, TLSSetupException

from cxkernel.errors import CxError
from cxkernel.metrics import Metrics
from directory.auth import Authenticator
from directory.sasl import Challenge, Failure, SaslServer, Success
from mailrelay.addressbook import AddressBook
from mailrelay.smtp.policy import (
    PolicyError,
    Route,
    check_data,
    check_from_header,
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

    @property
    def submission(self) -> bool:
        return self.role != "smtp"


class MailHandler:
    """aiosmtpd hooks for one listener role."""

    def __init__(self, policy: ListenerPolicy, book: Callable[[], AddressBook],
                 submitter: Submitter, auth: Authenticator | None,
                 metrics: Metrics | None = None) -> None:
        self.policy = policy
        self.book = book
        self.submitter = submitter
        self.auth = auth
        self.metrics = metrics or Metrics()

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
        extra = ["250-PIPELINING", "250-ENHANCEDSTATUSCODES"]
        out = out[:1] + extra + out[1:]
        out[-1] = "250 " + out[-1][4:]
        for i in range(len(out) - 1):
            out[i] = "250-" + out[i][4:]
        return out

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        for opt in mail_options:
            key = opt.split("=", 1)[0].upper()
            if key not in ("BODY", "SMTPUTF8", "SIZE"):
                return f"555 5.5.4 MAIL parameter {key} not supported"
        try:
            if address and address.startswith("@"):
                raise PolicyError(553, "5.1.7", "Source routes are not accepted")
            check_sender(address, self._auth_user(session), self.book())
        except PolicyError as exc:
            log.info("refused MAIL from=<%s> client=%s: %s", address, self._peer_ip(session), exc.reason)
            return exc.smtp_reply()
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.routes = {}  # type: ignore[attr-defined]
        return "250 2.1.0 Sender ok"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if rcpt_options:
            return f"555 5.5.4 RCPT parameter {rcpt_options[0].split('=')[0]} not supported"
        if len(envelope.rcpt_tos) >= self.policy.max_recipients:
            return "452 4.5.3 Too many recipients"
        relay = self._auth_user(session) is not None or self._trusted(session)
        try:
            route: Route = route_recipient(address, self.book(), relay_allowed=relay)
        except PolicyError as exc:
            self.metrics.inc("smtp_rcpt_refused_total", code=str(exc.smtp_code))
            log.info("refused RCPT to=<%s> from=<%s> client=%s: %s", address,
                     envelope.mail_from, self._peer_ip(session), exc.reason)
            return exc.smtp_reply()
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        envelope.routes[address] = route  # type: ignore[attr-defined]
        return "250 2.1.5 Recipient ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        user = self._auth_user(session)
        try:
            data = check_data(data, strict=not self.policy.submission)
            if self.policy.submission:
                check_from_header(data, user, self.book())
        except PolicyError as exc:
            self.metrics.inc("smtp_data_refused_total", code=str(exc.smtp_code))
            log.info("refused DATA from=<%s> client=%s: %s", envelope.mail_from,
                     self._peer_ip(session), exc.reason)
            return exc.smtp_reply()
        ssl_obj = server.transport.get_extra_info("ssl_object") if server.transport else None
        tls = f"{ssl_obj.version()} {ssl_obj.cipher()[0]}" if ssl_obj else None
        proto = "ESMTP" + ("S" if tls else "") + ("A" if user else "")
        client = ClientInfo(proto, session.host_name or "", self._peer_ip(session),
                            session.peer[0] if isinstance(session.peer, tuple) else "",
                            user, tls)
        sub = Submission(envelope.mail_from or "", list(envelope.rcpt_tos), data, client,
                         "submission" if self.policy.submission else "smtp",
                         getattr(envelope, "routes", None))
        try:
            result = await self.submitter.submit(sub)
        except CxError as exc:
            log.error("submit failed from=<%s>: %s", envelope.mail_from, exc.reason)
            return exc.smtp_reply()
        self.metrics.inc("smtp_messages_received_total", listener=self.policy.role)
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

