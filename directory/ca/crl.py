"""Certificate revocation lists (RFC 5280 §5)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from .issue import CertificateAuthority, _aki


class RevocationReason(IntEnum):
    """CRLReason codes, RFC 5280 §5.3.1 (value 7 is not used)."""

    UNSPECIFIED = 0
    KEY_COMPROMISE = 1
    CA_COMPROMISE = 2
    AFFILIATION_CHANGED = 3
    SUPERSEDED = 4
    CESSATION_OF_OPERATION = 5
    CERTIFICATE_HOLD = 6
    REMOVE_FROM_CRL = 8
    PRIVILEGE_WITHDRAWN = 9
    AA_COMPROMISE = 10

    @property
    def flag(self) -> x509.ReasonFlags:
        return _TO_FLAG[self]

    @classmethod
    def from_flag(cls, flag: x509.ReasonFlags | None) -> RevocationReason:
        if flag is None:
            return cls.UNSPECIFIED
        return _FROM_FLAG[flag]


_TO_FLAG = {
    RevocationReason.UNSPECIFIED: x509.ReasonFlags.unspecified,
    RevocationReason.KEY_COMPROMISE: x509.ReasonFlags.key_compromise,
    RevocationReason.CA_COMPROMISE: x509.ReasonFlags.ca_compromise,
    RevocationReason.AFFILIATION_CHANGED: x509.ReasonFlags.affiliation_changed,
    RevocationReason.SUPERSEDED: x509.ReasonFlags.superseded,
    RevocationReason.CESSATION_OF_OPERATION: x509.ReasonFlags.cessation_of_operation,
    RevocationReason.CERTIFICATE_HOLD: x509.ReasonFlags.certificate_hold,
    RevocationReason.REMOVE_FROM_CRL: x509.ReasonFlags.remove_from_crl,
    RevocationReason.PRIVILEGE_WITHDRAWN: x509.ReasonFlags.privilege_withdrawn,
    RevocationReason.AA_COMPROMISE: x509.ReasonFlags.aa_compromise,
}
_FROM_FLAG = {flag: reason for reason, flag in _TO_FLAG.items()}


@dataclass(frozen=True)
class Revocation:
    """One revoked certificate as the directory records it."""

    serial: int
    revoked_at: datetime
    reason: RevocationReason = RevocationReason.UNSPECIFIED


def build_crl(
    ca: CertificateAuthority,
    revoked: list[Revocation],
    *,
    now: datetime,
    crl_number: int,
    next_update: timedelta = timedelta(days=7),
) -> x509.CertificateRevocationList:
    """A CRL signed by ``ca`` listing ``revoked`` (serialise with ``public_bytes(DER)``)."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(now)
        .next_update(now + next_update)
        # RFC 5280 §5.2.1 / §5.2.3: conforming CRL issuers MUST include AKI and CRL number.
        .add_extension(_aki(ca), critical=False)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
    )
    for entry in revoked:
        rb = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.revoked_at)
        )
        # RFC 5280 §5.3.1: the reasonCode SHOULD be absent rather than "unspecified".
        if entry.reason is not RevocationReason.UNSPECIFIED:
            rb = rb.add_extension(x509.CRLReason(entry.reason.flag), critical=False)
        builder = builder.add_revoked_certificate(rb.build())
    return builder.sign(ca.key, hashes.SHA256())
