"""What the verifier trusts right now: the city CA and its revocation state, cached.

One small query per batch of arriving documents (the CA revision) tells whether anything
changed; only then are the anchors, the CRL and the OCSP snapshot rebuilt. Revocation
answers are cached per certificate (:class:`CachedRevocation`), paths per signer
(:class:`VerifyCache`).

Revocation sources, in :attr:`TrustStore.sources` order (the first definite answer wins):

* ``ocsp``: our own responder's logic, in-process: an RFC 6960 request is built for the
  certificate, answered by :func:`directory.ca.build_ocsp_response` (signed by the CA key,
  from a snapshot of the certificate table) and read back with every check a remote
  client makes (:func:`read_ocsp_response`). No HTTP round trip for our own CA.
* ``crl``: the very CRL we publish at ``/ca/crl.der``.

Without the CA passphrase neither can be signed; the snapshot of the database is used.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from directory.ca import (
    UNKNOWN,
    CertificateAuthority,
    CertStatus,
    Revocation,
    build_ocsp_response,
)
from directory.certs import CertificateService
from mailrelay.documents.chain import TrustAnchors, VerifyCache, der_of, fingerprint
from mailrelay.documents.revocation import (
    NOT_ISSUED,
    UNKNOWN_CERT,
    CachedRevocation,
    RevocationCheck,
    RevocationState,
    RevocationStatus,
    crl_check,
    first_known,
    ocsp_request,
    read_ocsp_response,
)
from mailrelay.documents.verify import IssuedCheck

REBUILD_SECONDS = 3600.0


@dataclass(frozen=True)
class IssuedCert:
    """One row of our certificate table, as the verifier needs it."""

    serial: int
    kind: str  # "seal" | "personal"
    unit: str | None
    address: str
    status: str  # "valid" | "revoked"
    der: bytes


def issued_check(ca: x509.Certificate,
                 table: Mapping[int, IssuedCert]) -> IssuedCheck:
    """Issue #11 item 4: for our CA, the certificate must be the very one in the table
    (same serial and same bytes); a certificate from another trusted CA is not judged."""
    ca_fp = fingerprint(ca)

    def check(cert: x509.Certificate, issuer: x509.Certificate) -> bool | None:
        if fingerprint(issuer) != ca_fp:
            return None
        row = table.get(cert.serial_number)
        return row is not None and row.der == der_of(cert)

    return check


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


def own_ocsp_check(ca: CertificateAuthority,
                   statuses: Mapping[int, CertStatus]) -> RevocationCheck:
    """OCSP for certificates of our own CA, answered in-process by the responder logic
    that serves ``/ca/ocsp`` (same request, same signed response, same client checks)."""
    ca_fp = fingerprint(ca.certificate)

    def check(cert: x509.Certificate, issuer: x509.Certificate,
              now: datetime) -> RevocationStatus:
        if fingerprint(issuer) != ca_fp:
            return RevocationStatus(RevocationState.UNKNOWN, "ocsp", detail="not our CA")
        nonce = os.urandom(16)  # RFC 8954: the answer is for this very request
        answer = build_ocsp_response(ca, ocsp_request(cert, issuer, nonce),
                                     lambda serial: statuses.get(serial, UNKNOWN), now=now)
        status = read_ocsp_response(answer, cert, issuer, now, nonce=nonce)
        if status.state is RevocationState.UNKNOWN and status.detail == UNKNOWN_CERT:
            # Issue #11: "unknown" from our own responder means we never issued it; a
            # failure, never a reason to ask the CRL (which would say "good").
            return RevocationStatus(RevocationState.UNKNOWN, "ocsp", detail=NOT_ISSUED)
        return status

    return check


DEFAULT_SOURCES: tuple[str, ...] = ("ocsp", "crl")


class TrustStore:
    """Anchors, path cache and revocation check, refreshed when the CA revision changes."""

    def __init__(self, certs: CertificateService,
                 sources: Sequence[str] = DEFAULT_SOURCES) -> None:
        self.certs = certs
        self.sources = tuple(sources)  # "ocsp", "crl": asked in this order
        self.revision = -1
        self.anchors = TrustAnchors(())
        self.cache = VerifyCache()
        self.revocation: RevocationCheck | None = None
        self.table: dict[int, IssuedCert] = {}
        self.issued: IssuedCheck | None = None
        self._built = 0.0
        self.stale = False  # rebuild at the next refresh whatever the revision says

    async def refresh(self) -> bool:
        """Rebuild when the CA revision changed (or hourly); True when it changed."""
        rev = await self.certs.revision()
        if (not self.stale and rev == self.revision
                and time.monotonic() - self._built < REBUILD_SECONDS):
            return False
        changed = self.revision not in (-1, rev)
        if rev == 0:
            anchors, revocation = TrustAnchors(()), None
            table, issued = {}, None
        else:
            ca = await self.certs.ca_certificate()
            anchors = (self.anchors if ca in self.anchors.certificates
                       else TrustAnchors((ca,)))
            table = {int(r.serial, 16): IssuedCert(int(r.serial, 16), r.kind, r.unit_code,
                                                   r.address, r.status, r.cert_der)
                     for r in await self.certs.issued_rows()}
            issued = issued_check(ca, table)
            revocation = CachedRevocation(await self._check(ca))
        # Swapped in together, after the last await: a verification running meanwhile
        # uses the old state whole, never a half-built one (nor no revocation check).
        # Any change of the CA (a certificate issued or revoked, on any node: the
        # revision is in the database) drops every trust answer kept here: paths and
        # revocation statuses. What is kept per certificate elsewhere (parsed objects,
        # key usage, addresses) is a function of its bytes and stays.
        self.anchors, self.revocation, self.table, self.issued = (
            anchors, revocation, table, issued)
        self.cache = VerifyCache()
        self.revision = rev
        self._built = time.monotonic()
        self.stale = False
        return changed

    def owner(self, cert: x509.Certificate | None) -> IssuedCert | None:
        """The table row of a certificate we issued (same bytes), else None."""
        if cert is None or self.issued is None or not self.anchors.certificates:
            return None
        row = self.table.get(cert.serial_number)
        if row is None or row.der != der_of(cert):
            return None
        return row

    def invalidate(self) -> None:
        """Rebuild on the next refresh (after changing :attr:`sources`, or when the
        ``certificates_changed`` NOTIFY says a certificate was issued or revoked); the
        refresh still reports whether the revision changed."""
        self.stale = True

    async def _check(self, ca: x509.Certificate) -> RevocationCheck:
        if not self.certs.has_passphrase:
            return snapshot_check(ca, await self.certs.revocations())
        checks: list[RevocationCheck] = []
        for source in self.sources:
            if source == "ocsp":
                checks.append(own_ocsp_check(await self.certs.load_ca(),
                                             await self.certs.statuses()))
            elif source == "crl":
                checks.append(crl_check([await self.certs.crl()]))  # as at /ca/crl.der
            else:
                raise ValueError(f"unknown revocation source {source!r}")
        return first_known(*checks)
