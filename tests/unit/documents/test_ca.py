"""The city CA: certificate profiles, key storage, PKCS#12, CRL and OCSP."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from directory.ca import (
    GOOD,
    CertStatus,
    KeyAlgorithm,
    Revocation,
    RevocationReason,
    Status,
    build_crl,
    build_ocsp_request,
    build_ocsp_response,
    create_root_ca,
    dump_private_key,
    export_pkcs12,
    issue_personal_certificate,
    load_pkcs12,
    load_private_key,
    unit_docs_address,
)
from directory.ca.keys import random_serial
from mailrelay.documents.revocation import RevocationState, read_ocsp_response

from .conftest import NOW, City


def ext(cert: x509.Certificate, cls: type[x509.ExtensionType]) -> x509.Extension:
    return cert.extensions.get_extension_for_class(cls)


def test_root_ca_profile(city: City) -> None:
    root = city.ca.certificate
    assert root.subject == root.issuer
    assert root.subject.rfc4514_string() == "CN=CX City Root CA,O=CX City Government,C=CN"
    bc = ext(root, x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ext(root, x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    pub = root.public_key()
    assert isinstance(pub, rsa.RSAPublicKey) and pub.key_size == 2048
    root.verify_directly_issued_by(root)


def test_ecdsa_root() -> None:
    ca = create_root_ca(now=NOW, algorithm=KeyAlgorithm.ECDSA_P256)
    assert isinstance(ca.certificate.public_key(), ec.EllipticCurvePublicKey)
    ca.certificate.verify_directly_issued_by(ca.certificate)


def test_key_storage_needs_the_passphrase(city: City) -> None:
    pem = dump_private_key(city.ca.key, b"correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in pem
    again = load_private_key(pem, b"correct horse")
    assert again.public_key().public_numbers() == city.ca.key.public_key().public_numbers()
    with pytest.raises(ValueError):
        load_private_key(pem, b"wrong")
    with pytest.raises(ValueError):
        dump_private_key(city.ca.key, b"")


def test_unit_seal_profile(city: City) -> None:
    cert = city.finance.certificate
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "楚雄市财政局"
    # RFC 5280 §4.1.2.6: UTF8String for the Chinese name
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0]
    assert cn._type == x509.name._ASN1Type.UTF8String
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == \
        "finance"
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.content_commitment
    assert not ku.value.key_encipherment
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.EMAIL_PROTECTION]
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["finance.docs@cx.example"]
    cdp = ext(cert, x509.CRLDistributionPoints).value
    assert cdp[0].full_name[0].value == "http://ca.cx.example/root.crl"
    aia = ext(cert, x509.AuthorityInformationAccess).value
    assert aia[0].access_location.value == "http://ca.cx.example/ocsp"
    ski = ext(city.ca.certificate, x509.SubjectKeyIdentifier).value
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == ski.digest
    assert ext(cert, x509.SubjectKeyIdentifier).value.digest
    assert cert.serial_number.bit_length() >= 64
    cert.verify_directly_issued_by(city.ca.certificate)
    assert unit_docs_address("Town-Lucheng", "CX.example") == "town-lucheng.docs@cx.example"


def test_personal_certificates(city: City) -> None:
    rsa_cert = issue_personal_certificate(city.ca, email="li.ming@cx.example",
                                          full_name="李明", now=NOW).certificate
    ku = ext(rsa_cert, x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment and ku.content_commitment
    assert ext(rsa_cert, x509.SubjectAlternativeName).value.get_values_for_type(
        x509.RFC822Name) == ["li.ming@cx.example"]
    ec_cert = issue_personal_certificate(city.ca, email="wang.fang@cx.example",
                                         full_name="王芳", now=NOW,
                                         algorithm=KeyAlgorithm.ECDSA_P256).certificate
    assert not ext(ec_cert, x509.KeyUsage).value.key_encipherment


def test_serials_are_random_and_positive() -> None:
    serials = {random_serial() for _ in range(1000)}
    assert len(serials) == 1000
    assert all(64 <= s.bit_length() <= 159 for s in serials)


@pytest.mark.parametrize("legacy", [False, True])
def test_pkcs12_round_trip(city: City, legacy: bool) -> None:
    data = export_pkcs12(city.finance.key, city.finance.certificate, b"s3cret",
                         chain=[city.ca.certificate], legacy=legacy)
    bundle = load_pkcs12(data, b"s3cret")
    assert bundle.certificate == city.finance.certificate
    assert bundle.chain == [city.ca.certificate]
    assert bundle.key.public_key().public_numbers() == \
        city.finance.key.public_key().public_numbers()
    with pytest.raises(ValueError):
        load_pkcs12(data, b"wrong")


def test_crl_with_reasons(city: City) -> None:
    entries = [Revocation(11, NOW, RevocationReason.KEY_COMPROMISE),
               Revocation(12, NOW, RevocationReason.SUPERSEDED),
               Revocation(13, NOW)]
    crl = build_crl(city.ca, entries, now=NOW, crl_number=42)
    assert crl.is_signature_valid(city.ca.certificate.public_key())  # type: ignore[arg-type]
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 42
    r11 = crl.get_revoked_certificate_by_serial_number(11)
    assert r11 is not None
    assert r11.extensions.get_extension_for_class(x509.CRLReason).value.reason == \
        x509.ReasonFlags.key_compromise
    r13 = crl.get_revoked_certificate_by_serial_number(13)
    assert r13 is not None and len(r13.extensions) == 0  # "unspecified" is left out
    assert RevocationReason.from_flag(x509.ReasonFlags.superseded) is RevocationReason.SUPERSEDED
    assert int(RevocationReason.PRIVILEGE_WITHDRAWN) == 9  # RFC 5280 §5.3.1


def test_ocsp_good_revoked_unknown(city: City) -> None:
    cert = city.finance.certificate
    statuses = {
        "good": GOOD,
        "revoked": CertStatus(Status.REVOKED, NOW - timedelta(hours=2),
                              RevocationReason.KEY_COMPROMISE),
        "unknown": CertStatus(Status.UNKNOWN),
    }
    for name, status in statuses.items():
        req = build_ocsp_request(cert, city.ca.certificate, nonce=b"0123456789abcdef")
        der = build_ocsp_response(city.ca, req, lambda serial, s=status: s,  # type: ignore[misc]
                                  now=NOW)
        resp = ocsp.load_der_ocsp_response(der)
        assert resp.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        assert resp.serial_number == cert.serial_number
        assert resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == \
            b"0123456789abcdef"
        read = read_ocsp_response(der, cert, city.ca.certificate, NOW,
                                  nonce=b"0123456789abcdef")
        assert read.state is RevocationState(name)
        if name == "revoked":
            assert read.reason == "key_compromise"
            assert read.revoked_at == NOW - timedelta(hours=2)


def test_ocsp_refuses_other_issuers_and_garbage(city: City) -> None:
    other = create_root_ca(now=NOW)
    req = build_ocsp_request(city.finance.certificate, city.ca.certificate)
    resp = ocsp.load_der_ocsp_response(build_ocsp_response(other, req, lambda s: GOOD, now=NOW))
    assert resp.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED
    resp = ocsp.load_der_ocsp_response(build_ocsp_response(city.ca, b"junk", lambda s: GOOD,
                                                           now=NOW))
    assert resp.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    # a response signed by someone else is not believed
    forged = build_ocsp_response(other, req, lambda s: GOOD, now=NOW)
    assert read_ocsp_response(forged, city.finance.certificate, city.ca.certificate,
                              NOW).state is RevocationState.UNKNOWN


def test_stale_ocsp_answer_is_unknown(city: City) -> None:
    req = build_ocsp_request(city.finance.certificate, city.ca.certificate)
    stale = build_ocsp_response(city.ca, req, lambda s: GOOD, now=NOW - timedelta(days=3))
    assert read_ocsp_response(stale, city.finance.certificate, city.ca.certificate,
                              NOW).state is RevocationState.UNKNOWN
