"""Revocation on arrival through our own OCSP responder's logic, in-process (no HTTP)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from cryptography import x509

from directory.ca import CertificateAuthority, CertStatus, RevocationReason, Status, build_crl
from mailrelay.documents.revocation import CachedRevocation, RevocationState, crl_check, first_known
from mailrelay.documents.trust import own_ocsp_check
from mailrelay.documents.verify import verify_message

from .conftest import NOW, City


def _statuses(city: City, revoked: bool) -> dict[int, CertStatus]:
    serial = city.finance.certificate.serial_number
    if revoked:
        return {serial: CertStatus(Status.REVOKED, NOW - timedelta(hours=1),
                                   RevocationReason.KEY_COMPROMISE)}
    return {serial: CertStatus(Status.GOOD)}


def test_good_through_own_ocsp(city: City, sealed: Callable[..., bytes]) -> None:
    check = own_ocsp_check(city.ca, _statuses(city, revoked=False))
    v = verify_message(sealed(), city.anchors, now=NOW, revocation=check)
    assert v.trusted and v.revocation_source == "ocsp"


def test_revoked_through_own_ocsp(city: City, sealed: Callable[..., bytes]) -> None:
    check = own_ocsp_check(city.ca, _statuses(city, revoked=True))
    v = verify_message(sealed(), city.anchors, now=NOW, revocation=check)
    assert not v.trusted and v.reason == "revoked"
    assert v.revocation_source == "ocsp"
    assert "key_compromise" in v.text and "source ocsp" in v.text


def test_unknown_serial_is_not_issued_by_us(city: City, sealed: Callable[..., bytes]) -> None:
    """Issue #11: our responder's "unknown" means our CA never issued it: a failure, and
    never a reason to ask the CRL (which lists only revocations, so it says "good")."""
    crl = build_crl(city.ca, [], now=NOW - timedelta(hours=1), crl_number=1)
    assert verify_message(sealed(), city.anchors, now=NOW,
                          revocation=crl_check([crl])).trusted  # the CRL alone: "good"
    check = first_known(own_ocsp_check(city.ca, {}), crl_check([crl]))
    v = verify_message(sealed(), city.anchors, now=NOW, revocation=check)
    assert not v.trusted and v.reason == "not-issued-by-us"
    assert v.revocation_source == "ocsp"


def test_foreign_issuer_is_not_answered(city: City, foreign_ca: CertificateAuthority) -> None:
    check = own_ocsp_check(city.ca, _statuses(city, revoked=True))
    got = check(city.finance.certificate, foreign_ca.certificate, NOW)
    assert got.state is RevocationState.UNKNOWN


def test_answers_are_cached_per_certificate(city: City) -> None:
    calls: list[x509.Certificate] = []
    inner = own_ocsp_check(city.ca, _statuses(city, revoked=False))

    def counting(cert: x509.Certificate, issuer: x509.Certificate, now):  # type: ignore[no-untyped-def]
        calls.append(cert)
        return inner(cert, issuer, now)
    cached = CachedRevocation(counting)
    for i in range(5):
        got = cached(city.finance.certificate, city.ca.certificate, NOW + timedelta(seconds=i))
        assert got.state is RevocationState.GOOD and got.source == "ocsp"
    assert len(calls) == 1
