"""OCSP responder logic (RFC 6960): parse a request, answer good/revoked/unknown.

The CA signs responses itself (RFC 6960 §4.2.2.2, case 1: the responder is the issuing
CA), so no delegated OCSP-signing certificate is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from asn1crypto import keys as asn1_keys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from .crl import RevocationReason
from .issue import CertificateAuthority


class Status(StrEnum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class CertStatus:
    """What the directory knows about one serial number."""

    status: Status
    revoked_at: datetime | None = None
    reason: RevocationReason = RevocationReason.UNSPECIFIED


GOOD = CertStatus(Status.GOOD)
UNKNOWN = CertStatus(Status.UNKNOWN)

_OCSP_STATUS = {
    Status.GOOD: ocsp.OCSPCertStatus.GOOD,
    Status.REVOKED: ocsp.OCSPCertStatus.REVOKED,
    Status.UNKNOWN: ocsp.OCSPCertStatus.UNKNOWN,
}


def issuer_hashes(issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    """(issuerNameHash, issuerKeyHash) of a CertID (RFC 6960 §4.1.1)."""
    name_hash = hashes.Hash(algorithm)
    name_hash.update(issuer.subject.public_bytes())
    spki = issuer.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    # issuerKeyHash covers the subjectPublicKey BIT STRING value, without tag, length and
    # the unused-bits octet.
    key_bits = asn1_keys.PublicKeyInfo.load(spki)["public_key"].contents[1:]
    key_hash = hashes.Hash(algorithm)
    key_hash.update(key_bits)
    return name_hash.finalize(), key_hash.finalize()


def build_ocsp_request(cert: x509.Certificate, issuer: x509.Certificate, *,
                       nonce: bytes | None = None) -> bytes:
    """A DER OCSP request for one certificate (client side, used by tests and tools)."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def build_ocsp_response(
    ca: CertificateAuthority,
    request_der: bytes,
    lookup: Callable[[int], CertStatus],
    *,
    now: datetime,
    validity: timedelta = timedelta(hours=12),
) -> bytes:
    """Answer one OCSP request; returns the DER OCSPResponse to send back.

    ``lookup(serial)`` returns the directory's status for a serial issued by ``ca``.
    """
    try:
        request = ocsp.load_der_ocsp_request(request_der)
    except ValueError:
        # RFC 6960 §2.3: malformedRequest for a request that does not parse.
        return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    algorithm = request.hash_algorithm
    name_hash, key_hash = issuer_hashes(ca.certificate, algorithm)
    if (request.issuer_name_hash, request.issuer_key_hash) != (name_hash, key_hash):
        # RFC 6960 §2.3: "unauthorized" when the server cannot answer for this issuer.
        return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
    status = lookup(request.serial_number)
    revoked_at = status.revoked_at if status.status is Status.REVOKED else None
    if status.status is Status.REVOKED and revoked_at is None:
        revoked_at = now
    reason = (status.reason.flag
              if status.status is Status.REVOKED
              and status.reason is not RevocationReason.UNSPECIFIED else None)
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=name_hash,
            issuer_key_hash=key_hash,
            serial_number=request.serial_number,
            algorithm=algorithm,
            cert_status=_OCSP_STATUS[status.status],
            this_update=now,
            next_update=now + validity,
            revocation_time=revoked_at,
            revocation_reason=reason,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, ca.certificate)
    )
    try:
        nonce = request.extensions.get_extension_for_class(x509.OCSPNonce)
    except x509.ExtensionNotFound:
        pass
    else:
        # RFC 8954 §2.1: echo the client's nonce so it can detect replays.
        builder = builder.add_extension(nonce.value, critical=False)
    response = builder.sign(ca.key, hashes.SHA256())
    return response.public_bytes(serialization.Encoding.DER)


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER)
