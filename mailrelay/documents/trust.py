"""What the verifier trusts right now: the city CA and its revocation state, cached.

One small query per batch of arriving documents (the CA revision) tells whether anything
changed; only then are the anchors and the CRL rebuilt. Revocation answers are cached per
certificate (:class:`CachedRevocation`), paths per signer (:class:`VerifyCache`).
"""

from __future__ import annotations

import time
from datetime import datetime

from cryptography import x509

from directory.ca import Revocation
from directory.certs import CertificateService
from mailrelay.documents.chain import TrustAnchors, VerifyCache, fingerprint
from mailrelay.documents.revocation import (
    CachedRevocation,
    RevocationCheck,
    RevocationState,
    RevocationStatus,
    crl_check,
)

REBUILD_SECONDS = 3600.0


def snapshot_check(ca: x509.Certificate, revoked: list[Revocation]) -> RevocationCheck:
    """Revocation from a snapshot of the database (when no CA key is at hand to sign a CRL)."""
    by_serial = {r.serial: r for r in revoked}
    ca_fp = fingerprint(ca)

    def check(cert: x509.Certificate, issuer: x509.Certificate,
              now: datetime) -> RevocationStatus:
        if fingerprint(issuer) != ca_fp:
            return RevocationStatus(RevocationState.UNKNOWN, "db", detail="not our CA")
        entry = by_serial.get(cert.serial_number)
        if entry is None:
            return RevocationStatus(RevocationState.GOOD, "db")
        return RevocationStatus(RevocationState.REVOKED, "db", entry.reason.name.lower(),
                                entry.revoked_at)

    return check


class TrustStore:
    """Anchors, path cache and revocation check, refreshed when the CA revision changes."""

    def __init__(self, certs: CertificateService) -> None:
        self.certs = certs
        self.revision = -1
        self.anchors = TrustAnchors(())
        self.cache = VerifyCache()
        self.revocation: RevocationCheck | None = None
        self._built = 0.0

    async def refresh(self) -> None:
        rev = await self.certs.revision()
        if rev == self.revision and time.monotonic() - self._built < REBUILD_SECONDS:
            return
        if rev == 0:
            self.anchors, self.revocation = TrustAnchors(()), None
        else:
            ca = await self.certs.ca_certificate()
            if ca not in self.anchors.certificates:
                self.anchors = TrustAnchors((ca,))
                self.cache = VerifyCache()
            if self.certs.has_passphrase:
                # The very CRL we publish at /ca/crl.der.
                check = crl_check([await self.certs.crl()])
            else:
                check = snapshot_check(ca, await self.certs.revocations())
            self.revocation = CachedRevocation(check)
        self.revision = rev
        self._built = time.monotonic()
