"""Certificate path checks for seals (RFC 5280 §6, reduced to our small hierarchy).

The result of a path check does not depend on the time: it records the window in which
every certificate of the path is valid, so :class:`VerifyCache` can keep it per signer
certificate and each verification only compares ``now`` against that window.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

MAX_DEPTH = 5


@functools.lru_cache(maxsize=4096)
def fingerprint(cert: x509.Certificate) -> bytes:
    """SHA-256 of the certificate's DER, kept per certificate (every verification asks
    for it several times: path cache, revocation cache, certificate table)."""
    return cert.fingerprint(hashes.SHA256())


@functools.lru_cache(maxsize=4096)
def der_of(cert: x509.Certificate) -> bytes:
    """The certificate's DER, kept per certificate."""
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class TrustAnchors:
    """The CA certificates we trust (normally the one city root CA)."""

    certificates: tuple[x509.Certificate, ...]
    _by_subject: dict[bytes, list[x509.Certificate]] = field(init=False, repr=False,
                                                            compare=False)
    key: frozenset[bytes] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        index: dict[bytes, list[x509.Certificate]] = {}
        for cert in self.certificates:
            index.setdefault(cert.subject.public_bytes(), []).append(cert)
        object.__setattr__(self, "_by_subject", index)
        object.__setattr__(self, "key", frozenset(fingerprint(c) for c in self.certificates))

    @classmethod
    def from_pem(cls, pem: bytes) -> TrustAnchors:
        return cls(tuple(x509.load_pem_x509_certificates(pem)))

    def pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.certificates)

    def issuers_of(self, cert: x509.Certificate) -> list[x509.Certificate]:
        return self._by_subject.get(cert.issuer.public_bytes(), [])


@dataclass(frozen=True)
class PathResult:
    """Outcome of a path check; ``reason`` is "ok" or a Verdict reason code."""

    reason: str
    text: str
    path: tuple[x509.Certificate, ...] = ()  # leaf first, trust anchor last
    not_before: datetime | None = None  # latest notBefore on the path
    not_after: datetime | None = None  # earliest notAfter on the path

    @property
    def ok(self) -> bool:
        return self.reason == "ok"

    def at(self, now: datetime) -> tuple[str, str]:
        """(reason, text) of this path at time ``now`` (RFC 5280 §6.1.3 (a)(2))."""
        if not self.ok:
            return self.reason, self.text
        assert self.not_before is not None and self.not_after is not None
        if now < self.not_before:
            return "not-yet-valid", f"a certificate on the path is valid only from " \
                                   f"{self.not_before.isoformat()}"
        if now > self.not_after:
            return "expired", f"a certificate on the path expired at " \
                              f"{self.not_after.isoformat()}"
        return "ok", "the seal's certificate chains to a trusted CA"


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(cert: x509.Certificate, below: int) -> bool:
    """RFC 5280 §6.1.4 (k), (l), (n): basicConstraints cA, path length, keyCertSign."""
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    if not bc.ca or (bc.path_length is not None and below > bc.path_length):
        return False
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return ku.key_cert_sign


def _unknown_critical(cert: x509.Certificate) -> bool:
    # RFC 5280 §4.2: a certificate with an unrecognised critical extension MUST be rejected.
    return any(ext.critical and isinstance(ext.value, x509.UnrecognizedExtension)
               for ext in cert.extensions)


def build_path(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate],
               anchors: TrustAnchors) -> PathResult:
    """Find and check a path from ``leaf`` to one of ``anchors`` (dates are left to ``at``)."""
    path = [leaf]
    current = leaf
    for depth in range(MAX_DEPTH):
        if _unknown_critical(current):
            return PathResult("bad-certificate", "a certificate has an unknown critical "
                                                 "extension")
        for anchor in anchors.issuers_of(current):
            if _signed_by(current, anchor) and _is_ca(anchor, depth):
                if fingerprint(anchor) != fingerprint(current):
                    path.append(anchor)
                return _windowed(tuple(path))
        candidates = [c for c in intermediates
                      if c.subject == current.issuer and c not in path]
        for cand in candidates:
            if _signed_by(current, cand) and _is_ca(cand, depth):
                path.append(cand)
                current = cand
                break
        else:
            return PathResult("untrusted-issuer",
                              f"no trusted CA issued the certificate of "
                              f"{current.subject.rfc4514_string()} "
                              f"(issuer {current.issuer.rfc4514_string()})")
    return PathResult("untrusted-issuer", "certificate path too long")


def _windowed(path: tuple[x509.Certificate, ...]) -> PathResult:
    return PathResult("ok", "", path,
                      max(c.not_valid_before_utc for c in path),
                      min(c.not_valid_after_utc for c in path))


@functools.lru_cache(maxsize=4096)
def check_seal_usage(leaf: x509.Certificate, *, require_eku: bool = True) -> tuple[str, str]:
    """Key usage and extended key usage of a signing certificate (RFC 8550 §4.4); kept
    per certificate (a fact of its bytes)."""
    try:
        ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None
    # RFC 8550 §4.4.2: if keyUsage is present, digitalSignature and/or nonRepudiation.
    if ku is not None and not (ku.digital_signature or ku.content_commitment):
        return "bad-key-usage", "the certificate may not be used for signatures"
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    # RFC 8550 §4.4.4: if EKU is present it must allow emailProtection. Our CA always
    # sets it, so by policy a seal without it is refused too.
    if eku is None:
        if require_eku:
            return "no-email-protection", "the certificate has no emailProtection usage"
    elif ExtendedKeyUsageOID.EMAIL_PROTECTION not in eku:
        return "no-email-protection", "the certificate is not for e-mail protection"
    return "ok", ""


def certificate_emails(cert: x509.Certificate) -> list[str]:
    """rfc822Name SANs, or the legacy emailAddress attribute (RFC 8550 §3)."""
    return list(_emails(cert))


@functools.lru_cache(maxsize=4096)
def _emails(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        emails = [e.lower() for e in san.get_values_for_type(x509.RFC822Name)]
    except x509.ExtensionNotFound:
        emails = []
    if not emails:
        attrs = cert.subject.get_attributes_for_oid(x509.oid.NameOID.EMAIL_ADDRESS)
        emails = [str(a.value).lower() for a in attrs]
    return tuple(emails)


def clear_caches() -> None:
    """Forget what is kept per certificate (benchmarks: a cold start)."""
    for fn in (fingerprint, der_of, check_seal_usage, _emails):
        fn.cache_clear()


class VerifyCache:
    """Per signer certificate path results, least recently used dropped first.

    Keys are the signer certificate, the trust anchors and the offered intermediates,
    so a changed trust store never reuses an old answer. Thread-safe enough for an
    executor: a race only computes a result twice.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[tuple[bytes, frozenset[bytes], frozenset[bytes]],
                                 PathResult] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def path(self, leaf: x509.Certificate, intermediates: Sequence[x509.Certificate],
             anchors: TrustAnchors) -> PathResult:
        key = (fingerprint(leaf), anchors.key, _fps(intermediates))
        found = self._items.get(key)
        if found is not None:
            self.hits += 1
            self._items.move_to_end(key)
            return found
        self.misses += 1
        result = build_path(leaf, intermediates, anchors)
        self._items[key] = result
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)
        return result

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


def _fps(certs: Iterable[x509.Certificate]) -> frozenset[bytes]:
    return frozenset(fingerprint(c) for c in certs)
