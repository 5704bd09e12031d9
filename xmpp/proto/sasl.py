"""Server-side SASL helpers for XMPP (RFC 6120 §6, RFC 4616 PLAIN, RFC 5802/7677 SCRAM).

Pure functions and one small exchange record; the session core drives them. Failures are
raised as ``SaslFailure`` carrying the RFC 6120 §6.5 condition to send.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

from directory.scram import HASHES, ScramError, ScramKeys, ScramServer

from ..jid import JIDError, nameprep, nodeprep
from .errors import SaslFailure

#: Mechanisms this core implements, strongest first.
SUPPORTED = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")
#: Mechanisms that expose the password and so need a secured stream (RFC 6120 §13.9.4).
NEEDS_TLS = frozenset({"PLAIN"})


def offered(configured: tuple[str, ...], secured: bool) -> tuple[str, ...]:
    """Mechanisms to advertise: PLAIN only on a secured stream."""
    return tuple(m for m in configured if m in SUPPORTED and (secured or m not in NEEDS_TLS))


def decode(text: str | None) -> bytes | None:
    """Decode SASL data carried as element text (RFC 6120 §6.4.2): None when absent (no
    initial response), b"" for "=" (empty response)."""
    if text is None:
        return None
    text = text.strip()
    if text == "=":
        return b""
    if not text:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        # RFC 6120 §6.5.5: incorrect-encoding for bad base64.
        raise SaslFailure("incorrect-encoding") from None


def encode(data: bytes) -> str:
    """Encode SASL data for element text; empty data is "=" (RFC 6120 §6.4.2)."""
    return base64.b64encode(data).decode("ascii") if data else "="


def parse_plain(message: bytes) -> tuple[str, str, str]:
    """``[authzid] NUL authcid NUL passwd`` (RFC 4616 §2) → (authzid, authcid, password)."""
    parts = message.split(b"\0")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise SaslFailure("malformed-request")  # RFC 6120 §6.5.8
    try:
        authzid, authcid, password = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError:
        raise SaslFailure("malformed-request") from None
    return authzid, authcid, password


def normalize_username(name: str, domain: str) -> str:
    """The account localpart for a SASL username: ``user`` or ``user@domain``."""
    local, at, dom = name.rpartition("@")
    if at:
        try:
            if nameprep(dom) != domain:
                raise SaslFailure("not-authorized")
        except JIDError:
            raise SaslFailure("not-authorized") from None
        name = local
    try:
        return nodeprep(name)
    except JIDError:
        raise SaslFailure("not-authorized") from None


def check_authzid(authzid: str, username: str, domain: str) -> None:
    """Only the account's own bare JID (or nothing) may be requested as authorization
    identity (RFC 6120 §6.4.6, §6.5.6 invalid-authzid)."""
    if not authzid:
        return
    try:
        if normalize_username(authzid, domain) == username and "@" in authzid:
            return
    except SaslFailure:
        pass
    raise SaslFailure("invalid-authzid")


_FAKE_SECRET = os.urandom(32)


def fake_keys(mechanism: str, username: str, iterations: int = 4096) -> ScramKeys:
    """Keys for an unknown user: the exchange runs to the end and fails at the proof, with
    a salt stable per username, so unknown and known users look alike (RFC 5802 §5.1)."""
    name = HASHES[mechanism]
    salt = hmac.new(_FAKE_SECRET, username.encode(), "sha256").digest()[:16]
    stored = hashlib.new(name, os.urandom(32)).digest()
    return ScramKeys(mechanism, salt, iterations, stored, os.urandom(len(stored)))


def scram_failure(exc: ScramError) -> SaslFailure:
    """Map an RFC 5802 server-error value to an RFC 6120 §6.5 condition."""
    if exc.code in ("invalid-proof", "channel-bindings-dont-match", "unknown-user"):
        return SaslFailure("not-authorized")
    return SaslFailure("malformed-request")


@dataclass
class Exchange:
    """State of one SASL exchange on the server."""

    mechanism: str
    username: str = ""
    authzid: str = ""
    scram: ScramServer | None = None
    unknown_user: bool = False
    #: "first": waiting for the initial/first client message; "keys": waiting for the
    #: driver's keys; "final": waiting for SCRAM client-final; "verdict": waiting for the
    #: driver's PLAIN verdict.
    stage: str = "first"
