"""XMPP framing of SASL (RFC 6120 §6): base64 in element text, usernames as localparts,
failure conditions. The mechanisms themselves (PLAIN, SCRAM, -PLUS) are the directory's one
SASL module (directory.sasl); this core keeps no SCRAM of its own.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from directory.sasl import ChannelBinding, Failure
from directory.sasl import offered as sasl_offered

from ..jid import JIDError, nameprep, nodeprep
from .errors import SaslFailure

#: Mechanisms offered over XMPP, strongest first.
SUPPORTED = ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")
#: Mechanisms that expose the password and so need a secured stream (RFC 6120 §13.9.4).
NEEDS_TLS = frozenset({"PLAIN"})


def offered(configured: tuple[str, ...], secured: bool,
            binding: ChannelBinding | None = None) -> tuple[str, ...]:
    """Mechanisms to advertise: PLAIN only on a secured stream, -PLUS only with a
    channel binding (which exists only on a secured stream)."""
    return sasl_offered(tuple(m for m in configured if m in SUPPORTED), secured=secured,
                        binding=binding if secured else None)


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


def preparer(domain: str) -> Callable[[str], str]:
    """The SASL module's `prepare` for this domain (ValueError for names not ours)."""
    def prepare(name: str) -> str:
        try:
            return normalize_username(name, domain)
        except SaslFailure as exc:
            raise ValueError(exc.condition) from None
    return prepare


#: RFC 6120 §6.5 conditions for the shared SASL module's failures.
CONDITIONS = {
    "malformed": "malformed-request",
    "not-authorized": "not-authorized",
    "invalid-authzid": "invalid-authzid",
    "aborted": "aborted",
    "temporary": "temporary-auth-failure",
    "invalid-mechanism": "invalid-mechanism",
    "encryption-required": "encryption-required",
}


def failure(step: Failure) -> SaslFailure:
    """The <failure/> for a failed exchange."""
    return SaslFailure(CONDITIONS.get(step.condition, "not-authorized"), step.text or None)
