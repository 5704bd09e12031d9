"""Revocation status of seal certificates: CRL (RFC 5280 §6.3) and OCSP (RFC 6960).

A check is a callable ``(cert, issuer, now) -> RevocationStatus``. Fetching CRLs or
talking to the OCSP responder is the caller's I/O, passed in as objects or a function;
:class:`CachedRevocation` keeps answers per certificate so a burst of documents from one
unit asks once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from .chain import fingerprint


class RevocationState(StrEnum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class RevocationStatus:
    state: RevocationState
    source: str  # "crl", "ocsp", or "none"
    reason: str | None = None  # RFC 5280 §5.3.1 reason name, e.g. "key_compromise"
    revoked_at: datetime | None = None
    detail: str = ""
    valid_until: datetime | None = None  # nextUpdate of the CRL or OCSP answer

    @property
    def revoked(self) -> bool:
        return self.state is RevocationState.REVOKED


UNKNOWN_CERT = "the responder does not know this certificate"  # certStatus unknown
# Our own CA's responder saying "unknown": a definite answer (never issued), see trust.py.
NOT_ISSUED = "not issued by this CA"
RevocationCheck = Callable[[x509.Certificate, x509.Certificate, datetime], RevocationStatus]


def _unknown(source: str, detail: str) -> RevocationStatus:
    return RevocationStatus(RevocationState.UNKNOWN, source, detail=detail)


def _verify_with(issuer_key: object, signature: bytes, data: bytes,
                 hash_alg: hashes.HashAlgorithm | None) -> bool:
    if hash_alg is None:
        return False
    try:
        if isinstance(issuer_key, rsa.RSAPublicKey):
            issuer_key.verify(signature, data, padding.PKCS1v15(), hash_alg)
        elif isinstance(issuer_key, ec.EllipticCurvePublicKey):
            issuer_key.verify(signature, data, ec.ECDSA(hash_alg))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def crl_check(crls: Sequence[x509.CertificateRevocationList]) -> RevocationCheck:
    """A check against CRLs the caller has fetched (from the distribution point)."""

    def check(cert: x509.Certificate, issuer: x509.Certificate,
              now: datetime) -> RevocationStatus:
        for crl in crls:
            if crl.issuer != issuer.subject:
                continue
            # RFC 5280 §6.3.3 (f), (g): the CRL must be signed by the certificate's issuer.
            if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                return _unknown("crl", "CRL signature does not verify")
            next_update = crl.next_update_utc
            if next_update is not None and now > next_update:
                return _unknown("crl", f"CRL is stale since {next_update.isoformat()}")
            entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if entry is None:
                return RevocationStatus(RevocationState.GOOD, "crl", valid_until=next_update)
            try:
                reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
                reason_name: str | None = reason.name
            except x509.ExtensionNotFound:
                reason_name = "unspecified"
            if reason_name == "remove_from_crl":
                return RevocationStatus(RevocationState.GOOD, "crl", valid_until=next_update)
            return RevocationStatus(RevocationState.REVOKED, "crl", reason_name,
                                    entry.revocation_date_utc, valid_until=next_update)
        return _unknown("crl", "no CRL from this issuer")

    return check


def ocsp_request(cert: x509.Certificate, issuer: x509.Certificate,
                 nonce: bytes | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256())
    if nonce:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def read_ocsp_response(response_der: bytes, cert: x509.Certificate, issuer: x509.Certificate,
                       now: datetime, *, nonce: bytes | None = None,
                       max_age: timedelta = timedelta(days=7)) -> RevocationStatus:
    """Check an OCSP response for ``cert`` (RFC 6960 §3.2) and read its status."""
    try:
        resp = ocsp.load_der_ocsp_response(response_der)
    except ValueError as exc:
        return _unknown("ocsp", f"unparsable OCSP response: {exc}")
    if resp.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        return _unknown("ocsp", f"OCSP responder said {resp.response_status.name}")
    # RFC 6960 §3.2 (1): the response is for the certificate we asked about.
    if resp.serial_number != cert.serial_number:
        return _unknown("ocsp", "OCSP response is for another certificate")
    # RFC 6960 §3.2 (2)-(4): signed by the issuer, or by a responder it delegated to.
    signer_key = issuer.public_key()
    if not _verify_with(signer_key, resp.signature, resp.tbs_response_bytes,
                        resp.signature_hash_algorithm):
        delegated = [c for c in resp.certificates if _is_delegate(c, issuer, now)]
        if not any(_verify_with(d.public_key(), resp.signature, resp.tbs_response_bytes,
                                resp.signature_hash_algorithm) for d in delegated):
            return _unknown("ocsp", "OCSP response is not signed by the issuer")
    # RFC 6960 §3.2 (5), (6): thisUpdate recent enough, nextUpdate not passed.
    if resp.this_update_utc > now + timedelta(minutes=5) or resp.this_update_utc < now - max_age:
        return _unknown("ocsp", "OCSP response is not current")
    if resp.next_update_utc is not None and now > resp.next_update_utc:
        return _unknown("ocsp", "OCSP response is stale")
    if nonce is not None:
        try:
            got = resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            got = None
        if got != nonce:
            return _unknown("ocsp", "OCSP nonce mismatch")
    status = resp.certificate_status
    if status is ocsp.OCSPCertStatus.GOOD:
        return RevocationStatus(RevocationState.GOOD, "ocsp", valid_until=resp.next_update_utc)
    if status is ocsp.OCSPCertStatus.REVOKED:
        reason = resp.revocation_reason
        return RevocationStatus(RevocationState.REVOKED, "ocsp",
                                reason.name if reason else "unspecified",
                                resp.revocation_time_utc, valid_until=resp.next_update_utc)
    return _unknown("ocsp", UNKNOWN_CERT)


def _is_delegate(cert: x509.Certificate, issuer: x509.Certificate, now: datetime) -> bool:
    # RFC 6960 §4.2.2.2: a delegated responder certificate carries id-kp-OCSPSigning
    # and is issued directly by the CA.
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        cert.verify_directly_issued_by(issuer)
    except (x509.ExtensionNotFound, ValueError, TypeError, InvalidSignature):
        return False
    return (ExtendedKeyUsageOID.OCSP_SIGNING in eku
            and cert.not_valid_before_utc <= now <= cert.not_valid_after_utc)


def ocsp_check(fetch: Callable[[bytes], bytes], *,
               nonce: Callable[[], bytes] | None = None) -> RevocationCheck:
    """A check that asks an OCSP responder through ``fetch(request_der) -> response_der``."""

    def check(cert: x509.Certificate, issuer: x509.Certificate,
              now: datetime) -> RevocationStatus:
        value = nonce() if nonce else None
        try:
            answer = fetch(ocsp_request(cert, issuer, value))
        except OSError as exc:
            return _unknown("ocsp", f"OCSP responder unreachable: {exc}")
        return read_ocsp_response(answer, cert, issuer, now, nonce=value)

    return check


def first_known(*checks: RevocationCheck) -> RevocationCheck:
    """Try checks in order (e.g. OCSP then CRL) and return the first non-unknown answer."""

    def check(cert: x509.Certificate, issuer: x509.Certificate,
              now: datetime) -> RevocationStatus:
        last = _unknown("none", "no revocation source")
        for one in checks:
            last = one(cert, issuer, now)
            # Issue #11: our own CA's "unknown" is final; a CRL would only say "good".
            if last.state is not RevocationState.UNKNOWN or last.detail == NOT_ISSUED:
                return last
        return last

    return check


class CachedRevocation:
    """Keeps each certificate's status until ``ttl`` passes or the source's nextUpdate.

    Revoked answers are kept too (a revocation never becomes undone, except a hold).
    """

    def __init__(self, check: RevocationCheck, ttl: timedelta = timedelta(minutes=10),
                 max_entries: int = 4096) -> None:
        self._check = check
        self.ttl = ttl
        self.max_entries = max_entries
        self._items: dict[bytes, tuple[datetime, RevocationStatus]] = {}

    def __call__(self, cert: x509.Certificate, issuer: x509.Certificate,
                 now: datetime) -> RevocationStatus:
        key = fingerprint(cert)
        found = self._items.get(key)
        if found is not None and now < found[0]:
            return found[1]
        status = self._check(cert, issuer, now)
        if status.state is not RevocationState.UNKNOWN:
            until = now + self.ttl
            if status.valid_until is not None:
                until = min(until, status.valid_until)
            if len(self._items) >= self.max_entries:
                self._items.pop(next(iter(self._items)))
            self._items[key] = (until, status)
        return status

    def forget(self, cert: x509.Certificate) -> None:
        self._items.pop(fingerprint(cert), None)
