"""SMTP policy: pure decisions on envelope and content (mox `smtpserver/analyze.go`).

No I/O: every function takes what it needs (the address book snapshot, the session facts)
and either returns a decision or raises `PolicyError`, which carries the SMTP reply.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.utils import getaddresses

from cxkernel.errors import CxError
from mailrelay.addressbook import AddressBook, Expansion
from mailrelay.headers import field_values


class PolicyError(CxError):
    """A refusal with its SMTP reply (code, enhanced code, public text)."""

    def __init__(self, code: int, enhanced: str, text: str, reason: str | None = None) -> None:
        super().__init__(text, reason=reason, smtp_code=code, smtp_enhanced=enhanced)


@dataclass(frozen=True)
class Route:
    """Where one envelope recipient goes."""

    recipient: str
    transport: str  # "local" | "remote" | "docs"
    domain: str  # destination domain for remote, "" otherwise
    expansion: Expansion | None = None


# RFC 5321 §4.1.2 Mailbox = Local-part "@" Domain. We accept dot-atom local parts (and
# UTF-8 with SMTPUTF8) but refuse what open-relay probes use: quoted local parts that hide
# '@', '%'-hacks, '!' bang paths and source routes (RFC 5321 §4.1.1.3 / Appendix C).
_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([^\s.@\[\]\"<>()]+\.)*[^\s.@\[\]\"<>()]+$")
_LOCAL_RE = re.compile(r"^[^\s@\"<>()\[\],;:\\%!]+$")


def split_address(address: str) -> tuple[str, str]:
    """Split and sanity-check a forward-path mailbox; raise PolicyError 501/553 if malformed."""
    if address.startswith("@") or ":" in address.split("@", 1)[0]:
        # source route "@a,@b:user@c": RFC 5321 §4.1.1.3 says receivers SHOULD ignore routes;
        # relaying through them is exactly the open-relay trick, so we refuse outright.
        raise PolicyError(553, "5.1.3", "Source routes are not accepted")
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain:
        raise PolicyError(553, "5.1.3", "Address must be user@domain")
    if local.startswith('"') or not _LOCAL_RE.match(local):
        raise PolicyError(553, "5.1.3", "Address syntax not accepted")
    if domain.startswith("[") and domain.endswith("]"):
        raise PolicyError(553, "5.1.2", "Address literals are not accepted")
    if not _DOMAIN_RE.match(domain) or ".." in local or local.startswith(".") or local.endswith("."):
        raise PolicyError(553, "5.1.3", "Address syntax not accepted")
    return local, domain.lower()


def route_recipient(address: str, book: AddressBook, *, relay_allowed: bool) -> Route:
    """Decide what to do with one RCPT TO address."""
    if "%" in address or "!" in address.split("@", 1)[0]:
        if relay_allowed:
            raise PolicyError(553, "5.1.3", "Address syntax not accepted")
        raise PolicyError(554, "5.7.1", "Relay access denied")
    try:
        local, domain = split_address(address)
    except PolicyError:
        if relay_allowed:
            raise
        raise PolicyError(554, "5.7.1", "Relay access denied") from None
    addr = f"{local}@{domain}"
    if book.is_local_domain(domain):
        exp = book.lookup(addr.lower())
        if exp is None:
            raise PolicyError(550, "5.1.1", "No such user here", reason=f"unknown {addr}")
        if exp.kind == "account":
            acct = book.accounts[addr.lower()]
            if not acct.active:
                raise PolicyError(550, "5.2.1", "Mailbox disabled", reason=f"disabled {addr}")
            if acct.over_quota:
                raise PolicyError(552, "5.2.2", "Mailbox full", reason=f"over quota {addr}")
        transport = "docs" if exp.kind == "unit-docs" else "local"
        return Route(addr.lower(), transport, "", exp)
    if not relay_allowed:
        raise PolicyError(554, "5.7.1", "Relay access denied", reason=f"relay to {domain}")
    return Route(addr, "remote", domain)


def check_sender(mail_from: str, auth_user: str | None, book: AddressBook) -> None:
    """A submitting user may use only their own address or aliases they own (553 5.7.1)."""
    if auth_user is None or mail_from == "":
        # RFC 5321 §4.5.5 / RFC 8098 §2.1: notices (MDNs) go out with the null
        # reverse-path; the From: header check still binds them to the user.
        return
    if not book.may_send_as(auth_user, mail_from):
        raise PolicyError(553, "5.7.1", "Sender address not owned by you",
                          reason=f"{auth_user} tried MAIL FROM {mail_from!r}")


def check_from_header(raw: bytes, auth_user: str | None, book: AddressBook) -> None:
    """Every From: address of an authenticated submission must be the user's (553 5.7.1)."""
    if auth_user is None:
        return
    values = field_values(raw, "From")
    addrs = [a for _n, a in getaddresses(values)]
    if not addrs or any(not a or not book.may_send_as(auth_user, a) for a in addrs):
        raise PolicyError(553, "5.7.1", "From: header address not owned by you",
                          reason=f"{auth_user} used From: {values!r}")


# ---- spoofing, lists, error budget (issue 12 item 6) -----------------------------------

def _is_our_domain(address: str, book: AddressBook) -> bool:
    domain = address.rpartition("@")[2].strip().rstrip(">").lower()
    return bool(domain) and (book.is_local_domain(domain) or domain.endswith("." + book.domain))


def check_foreign_sender(mail_from: str, book: AddressBook) -> None:
    """An untrusted port-25 client may not use our own domain as the envelope sender: our
    people send through submission (550 5.7.1, like a DMARC p=reject at the border)."""
    if mail_from and _is_our_domain(mail_from, book):
        raise PolicyError(550, "5.7.1", "Mail from this domain must be sent by submission",
                          reason=f"own-domain MAIL FROM {mail_from!r} on port 25")


def check_foreign_from_header(raw: bytes, book: AddressBook) -> None:
    """The same rule for the From: header of port-25 mail from an untrusted client."""
    values = field_values(raw, "From")
    for _name, addr in getaddresses(values):
        if addr and _is_our_domain(addr, book):
            raise PolicyError(550, "5.7.1", "Mail from this domain must be sent by submission",
                              reason=f"own-domain From: {values!r} on port 25")


def is_list(exp: Expansion, large_alias_members: int) -> bool:
    """Unit lists and aliases that fan out to many mailboxes (amplification targets)."""
    if exp.kind == "unit-list":
        return True
    return exp.kind == "alias" and len(exp.accounts) + len(exp.external) >= large_alias_members


def check_list_sender(route: Route, *, local_sender: bool, open_lists: frozenset[str],
                      large_alias_members: int) -> None:
    """Lists take mail only from authenticated local senders (or trusted networks) unless
    listed in `smtp.open_lists` (550 5.7.1): one anonymous message must not reach a unit."""
    exp = route.expansion
    if local_sender or exp is None or not is_list(exp, large_alias_members):
        return
    if "*" in open_lists or route.recipient.lower() in open_lists:
        return
    raise PolicyError(550, "5.7.1", "This list accepts mail only from authenticated local senders",
                      reason=f"anonymous post to list {route.recipient}")


# An address-like token, after NFKC (which folds the fullwidth and small '@' to '@').
_ADDRESS_TOKEN = re.compile(r"[^\s<>()\[\]\"',;:@]+@[^\s<>()\[\]\"',;:@]+\.[^\s<>()\[\]\"',;:@]+")


def _decoded(value: str) -> str:
    try:
        text = str(make_header(decode_header(value)))  # RFC 2047 encoded words
    except (ValueError, LookupError, UnicodeError):
        text = value
    return unicodedata.normalize("NFKC", text)


def check_display_names(raw: bytes, auth_user: str | None, book: AddressBook) -> None:
    """A submitted From: may not spell another address in its display name, e.g.
    `"director@cx.example" <li.si@cx.example>` (550 5.7.1); encoded words and look-alike
    '@' characters are decoded first."""
    if auth_user is None:
        return
    for value in field_values(raw, "From"):
        for token in _ADDRESS_TOKEN.findall(_decoded(value)):
            token = token.strip(".")
            if not book.may_send_as(auth_user, token):
                raise PolicyError(550, "5.7.1", "From: display name names another address",
                                  reason=f"{auth_user} used From: {value!r}")


@dataclass
class ErrorBudget:
    """Refused commands in one session (Postfix smtpd_soft/hard_error_limit,
    smtpd_error_sleep_time). Pure: the driver sleeps and closes as told."""

    soft: int
    hard: int
    sleep: float
    errors: int = 0

    def record(self) -> tuple[float, bool]:
        """Count one refusal: (seconds to wait before replying, close with 421 after it)."""
        self.errors += 1
        delay = self.sleep if self.errors > self.soft else 0.0
        return delay, self.errors >= self.hard

    def reset(self) -> None:
        """A message was accepted: the client is not (only) probing."""
        self.errors = 0


def has_bare_line_endings(data: bytes) -> bool:
    """True if `data` has a CR not before LF, an LF not after CR, or NUL (SMTP smuggling,
    CVE-2023-51764 family; RFC 5321 §2.3.8 says CR and LF only occur together as CRLF)."""
    crlf = data.count(b"\r\n")  # three C-speed counts beat a regex scan
    return data.count(b"\r") != crlf or data.count(b"\n") != crlf or b"\x00" in data


def normalise_line_endings(data: bytes) -> bytes:
    """Bare CR or LF become CRLF; NUL bytes are dropped."""
    if not has_bare_line_endings(data):
        return data
    data = data.replace(b"\x00", b"")
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def check_data(data: bytes, *, strict: bool) -> bytes:
    """Return the content to store. `strict` (the port-25 role) refuses bare CR/LF/NUL with
    550 5.6.0; submission listeners normalise them. Raw bare endings are never stored."""
    if not has_bare_line_endings(data):
        return data
    if strict:
        raise PolicyError(550, "5.6.0", "Bare CR, LF or NUL in message data is not accepted")
    return normalise_line_endings(data)
