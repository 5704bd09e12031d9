"""DKIM (RFC 6376) keys and signing with dkimpy: rsa-sha256, relaxed/relaxed.

Signing happens once, in the submission stage, before the message is queued; nothing
touches the bytes afterwards (ARCHITECTURE rule 4). `DkimSigner.sign` is CPU-bound
(body canonicalisation and hashing of the whole message, then an RSA operation): callers
on the event loop MUST run it in an executor, e.g. ``await signer.sign_async(raw)`` or
``await loop.run_in_executor(pool, signer.sign, raw)``. It is thread-safe (no shared state).

ed25519-sha256 (RFC 8463) is not offered: dkimpy needs PyNaCl for it, which is not a
dependency of this project.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

from cxkernel.errors import CxError

__all__ = ["DEFAULT_HEADERS", "DkimError", "DkimSigner", "generate_key", "record_value",
           "verify"]

# RFC 6376 §5.4.1 recommended set. "from" twice: over-signing (§8.15) stops anyone from
# adding a second From header after signing; the others are signed once, and signing a
# header that is absent also signs its absence.
DEFAULT_HEADERS: tuple[str, ...] = (
    "from", "from", "to", "cc", "subject", "date", "message-id", "reply-to", "sender",
    "in-reply-to", "references", "mime-version", "content-type",
    "content-transfer-encoding", "content-disposition", "list-id", "list-unsubscribe",
)

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_EOL = re.compile(rb"\r\n|\r|\n")
_FROM = re.compile(rb"(?im)^from[ \t]*:")


class DkimError(CxError):
    """The message could not be signed (malformed headers, no From:, bad key)."""

    smtp_code = 554
    smtp_enhanced = "5.6.0"
    temporary = False


def _check_name(what: str, value: str) -> None:
    # RFC 6376 §3.1: selectors and d= are (sub-)domain names of LDH labels.
    if not _DOMAIN.match(value) or len(value) > 253:
        raise ValueError(f"bad DKIM {what}: {value!r}")


def generate_key(selector: str, domain: str, bits: int = 2048) -> tuple[bytes, str]:
    """A new RSA key: (PEM private key, DNS TXT record to publish).

    The record reads ``sel._domainkey.example. IN TXT "v=DKIM1; k=rsa; p=..." "..."``, the
    value split into strings of at most 255 characters (RFC 1035 §3.3.14 character-string;
    RFC 6376 §3.6.2.2: verifiers concatenate them). `p=` is the base64 DER
    SubjectPublicKeyInfo (RFC 6376 §3.6.1). RFC 8301 §3.2: at least 1024 bits; 2048 is
    the default.
    """
    _check_name("selector", selector)
    _check_name("domain", domain)
    if bits < 1024:
        raise ValueError("RFC 8301 §3.2: DKIM RSA keys must have at least 1024 bits")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(serialization.Encoding.PEM,
                            serialization.PrivateFormat.TraditionalOpenSSL,  # PKCS#1
                            serialization.NoEncryption())
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    value = f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode('ascii')}"
    chunks = [value[i:i + 255] for i in range(0, len(value), 255)]
    record = f"{selector}._domainkey.{domain}. IN TXT " + " ".join(f'"{c}"' for c in chunks)
    return pem, record


def record_value(record: str) -> str:
    """The TXT value of a record from `generate_key`: its quoted strings concatenated."""
    return "".join(re.findall(r'"([^"]*)"', record))


def _crlf(raw: bytes) -> bytes:
    return _EOL.sub(b"\r\n", raw)


class DkimSigner:
    """Signs messages for one domain and selector (rsa-sha256, relaxed/relaxed)."""

    def __init__(self, domain: str, selector: str, private_key_pem: bytes,
                 headers: Sequence[str] = DEFAULT_HEADERS) -> None:
        _check_name("domain", domain)
        _check_name("selector", selector)
        lowered = [h.strip().lower() for h in headers]
        if "from" not in lowered:
            raise ValueError("RFC 6376 §5.4: the From header field MUST be signed")
        try:
            parse_pem_private_key(private_key_pem)  # fail at startup, not per message
        except (UnparsableKeyError, ValueError, TypeError) as exc:
            raise ValueError(f"DKIM private key for {selector}._domainkey.{domain} is not "
                             "a PEM RSA key") from exc
        self.domain = domain
        self.selector = selector
        self._key = private_key_pem
        self._headers = [h.encode("ascii") for h in lowered]

    def __repr__(self) -> str:  # never shows the key
        return f"DkimSigner(domain={self.domain!r}, selector={self.selector!r})"

    def sign(self, raw: bytes) -> bytes:
        """The message with a DKIM-Signature header prepended (CPU-bound: use an executor).

        Line endings are made CRLF first, as they will be on the wire, so the signature
        covers exactly the bytes that are sent. Raises `DkimError`.
        """
        msg = _crlf(raw)
        end = msg.find(b"\r\n\r\n")
        if _FROM.search(msg[: end + 2] if end >= 0 else msg) is None:
            # RFC 6376 §5.4: From is always signed; a message without it is not mail.
            raise DkimError("message has no From header field", reason="DKIM: no From")
        try:
            sig = dkim.sign(msg, self.selector.encode("ascii"), self.domain.encode("ascii"),
                            self._key, canonicalize=(b"relaxed", b"relaxed"),
                            signature_algorithm=b"rsa-sha256",
                            include_headers=self._headers, linesep=b"\r\n")
        except dkim.DKIMException as exc:
            raise DkimError("message could not be signed", reason=f"DKIM: {exc}") from None
        if not sig.endswith(b"\r\n"):
            sig += b"\r\n"
        return sig + msg

    async def sign_async(self, raw: bytes, executor: Executor | None = None) -> bytes:
        """`sign` in an executor (the loop's default one unless given)."""
        return await asyncio.get_running_loop().run_in_executor(executor, self.sign, raw)


def verify(raw: bytes, dns_txt_lookup: Callable[[str], str | bytes | None]) -> bool:
    """Verify the topmost DKIM signature; for tests and tools (synchronous, blocking).

    `dns_txt_lookup("sel._domainkey.example")` returns the TXT value (strings already
    concatenated, e.g. via `record_value`) or None.
    """

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        value = dns_txt_lookup(name.decode("ascii", "replace").rstrip(".").lower())
        return value.encode("ascii") if isinstance(value, str) else value

    try:
        return bool(dkim.verify(_crlf(raw), dnsfunc=dnsfunc))
    except dkim.DKIMException:
        return False
