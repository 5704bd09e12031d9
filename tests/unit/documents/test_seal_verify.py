"""Sealed documents round trip, and the trust matrix: every broken seal is refused."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from directory.ca import (
    CertificateAuthority,
    Revocation,
    RevocationReason,
    build_crl,
    issue_unit_seal,
)
from directory.ca.issue import _aki, _key_usage
from directory.ca.keys import generate_key, random_serial
from mailrelay.documents.chain import TrustAnchors, VerifyCache
from mailrelay.documents.docmime import outer_matches_signed, parse_document
from mailrelay.documents.mimeparts import parse_headers, split_entity
from mailrelay.documents.revocation import crl_check
from mailrelay.documents.seal import Signer, assemble_signed, sign_detached
from mailrelay.documents.verify import Verdict, find_signed, verify_message

from .conftest import DOMAIN, FILENAME, NOW, NUMBER, TITLE, City, make_meta, prepare


def check(raw: bytes, city: City, **kw: object) -> Verdict:
    return verify_message(raw, city.anchors, now=NOW, **kw)  # type: ignore[arg-type]


def test_round_trip(city: City, sealed: Callable[..., bytes]) -> None:
    raw = sealed()
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    long = [ln for ln in raw.split(b"\r\n") if len(ln) > 78]
    assert all(b" " not in ln.split(b": ", 1)[-1].strip() for ln in long), long
    verdict = check(raw, city)
    assert verdict.trusted and verdict.reason == "ok", verdict.text
    assert verdict.signer_email == "finance.docs@cx.example"
    assert "OU=finance" in (verdict.signer_subject or "")
    assert verdict.signer_serial == city.finance.serial
    assert verdict.signing_time is not None
    assert verdict.digest is not None and len(verdict.digest) == 32


def test_signed_part_is_byte_exact(city: City) -> None:
    prepared = prepare()
    raw = prepared.finish(sign_detached(prepared.entity, city.signer()))
    found = find_signed(raw)
    assert found is not None and found.content == prepared.entity


def test_chinese_title_number_and_filename_survive(city: City,
                                                   sealed: Callable[..., bytes]) -> None:
    raw = sealed()
    verdict = check(raw, city)
    assert verdict.content is not None
    doc = parse_document(verdict.content)
    assert doc.meta.title == TITLE and doc.meta.number == NUMBER
    assert doc.meta.from_unit_name == "楚雄市财政局"
    assert doc.note == "请各单位认真贯彻执行。\n此致"
    assert [a.filename for a in doc.attachments] == [FILENAME]
    assert doc.attachments[0].content == "工作要点正文……".encode() * 500
    outer = parse_headers(split_entity(raw)[0])
    assert outer["Subject"] == TITLE and outer["X-CX-Doc-Number"] == NUMBER
    assert outer["X-CX-Doc-To-Units"] == "stats, town-lucheng"
    assert outer_matches_signed(outer, doc.meta) == []


def test_outer_header_changed_is_detected_against_signed_metadata(
        city: City, sealed: Callable[..., bytes]) -> None:
    raw = sealed()
    head, body = split_entity(raw)
    forged = head.replace(b"X-CX-Doc-Urgency: urgent", b"X-CX-Doc-Urgency: normal") + \
        b"\r\n" + body
    verdict = check(forged, city)
    assert verdict.trusted  # the outer header is not covered by the signature ...
    assert verdict.content is not None
    doc = parse_document(verdict.content)
    # ... but comparing it with the signed copy exposes the change.
    assert outer_matches_signed(parse_headers(split_entity(forged)[0]), doc.meta) == \
        ["X-CX-Doc-Urgency"]


def test_ecdsa_and_rsa_pss_seals(city: City, sealed: Callable[..., bytes]) -> None:
    stats = check(sealed(city.signer(city.stats), from_addr="stats.docs@cx.example"), city)
    assert stats.trusted, stats.text
    pss = check(sealed(city.signer(rsa_pss=True)), city)
    assert pss.trusted, pss.text


def test_lf_line_endings_still_verify(city: City, sealed: Callable[..., bytes]) -> None:
    assert check(sealed().replace(b"\r\n", b"\n"), city).trusted


def test_nested_in_multipart_mixed_is_not_trusted(city: City,
                                                  sealed: Callable[..., bytes]) -> None:
    """Issue #11: a genuine seal wrapped next to an unsigned part is not looked for; the
    unsigned part must never travel under a trusted stamp."""
    inner = sealed()
    wrapped = (b"From: finance.docs@cx.example\r\nMIME-Version: 1.0\r\n"
               b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
               b"--outer\r\n" + inner + b"\r\n--outer\r\n"
               b"Content-Type: text/plain\r\n\r\nlist footer\r\n--outer--\r\n")
    v = check(wrapped, city)
    assert not v.trusted and v.reason == "not-signed"


def test_encapsulated_content_in_multipart_signed_is_refused(city: City) -> None:
    """Issue #11: a multipart/signed whose signature part carries its own content (an
    opaque SignedData of anything validly signed) must not vouch for the visible part."""
    from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
    entity = prepare().entity
    opaque = (pkcs7.PKCS7SignatureBuilder().set_data(entity)
              .add_signer(city.finance.certificate, city.finance.key, hashes.SHA256())
              .sign(Encoding.DER, [pkcs7.PKCS7Options.Binary]))
    visible = (b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
               b"Pay 1,000,000 to account 6222 0000 1111.\r\n")
    raw = assemble_signed([b"From: finance.docs@cx.example\r\n"], visible, opaque)
    v = check(raw, city)
    assert not v.trusted and v.reason == "malformed"


def test_weak_rsa_key_is_refused(city: City, sealed: Callable[..., bytes]) -> None:
    """Issue #11: RSA-1024 issued with the CA key: refused as weak-key."""
    from cryptography.hazmat.primitives.asymmetric import rsa as rsa_mod
    weak_key = rsa_mod.generate_private_key(public_exponent=65537, key_size=1024)
    cert = _issue_with_key(city, weak_key)
    raw = sealed(Signer(weak_key, cert, (city.ca.certificate,)))
    v = check(raw, city)
    assert not v.trusted and v.reason == "weak-key", v.text


def test_certificate_not_in_our_table_is_refused(city: City,
                                                 sealed: Callable[..., bytes]) -> None:
    """Issue #11: chaining to our CA is not enough: the very certificate must be ours."""
    table = {city.finance.certificate.serial_number:
             city.finance.certificate.public_bytes(serialization.Encoding.DER)}

    def issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool | None:
        return table.get(cert.serial_number) == cert.public_bytes(serialization.Encoding.DER)

    assert check(sealed(), city, issued=issued).trusted
    rogue = issue_unit_seal(city.ca, unit_code="finance", unit_name="财政局", domain=DOMAIN,
                            now=NOW - timedelta(days=1))
    v = check(sealed(Signer(rogue.key, rogue.certificate, (city.ca.certificate,))), city,
              issued=issued)
    assert not v.trusted and v.reason == "not-issued-by-us"


def _issue_with_key(city: City, key: object) -> x509.Certificate:
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    pub = key.public_key()  # type: ignore[attr-defined]
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak")]))
            .issuer_name(city.ca.certificate.subject).public_key(pub)
            .serial_number(random_serial())
            .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(
                "finance.docs@cx.example")]), critical=False)
            .add_extension(_key_usage(digital_signature=True, content_commitment=True),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                           critical=False)
            .add_extension(_aki(city.ca), critical=False)
            .sign(city.ca.key, hashes.SHA256()))


def test_opaque_signed_data(city: City) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
    entity = prepare().entity
    der = (pkcs7.PKCS7SignatureBuilder().set_data(entity)
           .add_signer(city.finance.certificate, city.finance.key, hashes.SHA256())
           .sign(Encoding.DER, [pkcs7.PKCS7Options.Binary]))
    b64 = base64.encodebytes(der).replace(b"\n", b"\r\n")
    raw = (b"From: finance.docs@cx.example\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"\r\n'
           b"Content-Transfer-Encoding: base64\r\n\r\n" + b64)
    verdict = check(raw, city)
    assert verdict.trusted, verdict.text
    assert verdict.content == entity


def test_verify_cache_reuses_path(city: City, sealed: Callable[..., bytes]) -> None:
    cache = VerifyCache()
    raw = sealed()
    for _ in range(3):
        assert check(raw, city, cache=cache).trusted
    assert (cache.misses, cache.hits, len(cache)) == (1, 2, 1)
    # The cached path is time independent: a later "now" still sees expiry.
    late = verify_message(raw, city.anchors, now=NOW + timedelta(days=3000), cache=cache)
    assert late.reason == "expired"


# --- the trust matrix -----------------------------------------------------------------

def _sig_corrupt(der: bytes) -> bytes:
    return der[:-10] + bytes([der[-10] ^ 0x01]) + der[-9:]


def _bad_usage_seal(ca: CertificateAuthority) -> Signer:
    key = generate_key()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name.from_rfc4514_string("CN=audit,OU=audit,O=CX"))
            .issuer_name(ca.certificate.subject).public_key(key.public_key())
            .serial_number(random_serial())
            .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=9))
            .add_extension(_key_usage(key_encipherment=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(
                "finance.docs@cx.example")]), critical=False)
            .add_extension(_aki(ca), critical=False)
            .sign(ca.key, hashes.SHA256()))
    return Signer(key, cert)  # type: ignore[arg-type]


def _seal_with(city: City, **kw: object) -> Signer:
    seal = issue_unit_seal(city.ca, unit_code="finance", unit_name="楚雄市财政局",
                           domain=DOMAIN, **kw)  # type: ignore[arg-type]
    return Signer(seal.key, seal.certificate, (city.ca.certificate,))


def _matrix_case(name: str, city: City, foreign_ca: CertificateAuthority,
                 sealed: Callable[..., bytes]) -> tuple[bytes, dict[str, object]]:
    prepared = prepare()
    entity = prepared.entity
    if name == "tampered-body":
        raw = sealed()
        found = find_signed(raw)
        assert found is not None
        # change one base64 character of the attachment inside the signed part
        idx = raw.index(b"5bel5L2c", raw.index(b"filename*"))
        return raw[:idx] + b"6bel5L2c" + raw[idx + 8:], {}
    if name == "tampered-header":
        raw = sealed()
        head_end = raw.index(b"\r\n\r\n") + 4
        body = raw[head_end:].replace(b"X-CX-Doc-Urgency: urgent", b"X-CX-Doc-Urgency: normal")
        return raw[:head_end] + body, {}
    if name == "wrong-digest":
        other = prepare(make_meta(doc_id="d-other")).entity
        return assemble_signed(prepared.outer_headers, entity,
                               sign_detached(other, city.signer())), {}
    if name == "bad-signature":
        der = _sig_corrupt(sign_detached(entity, city.signer()))
        return assemble_signed(prepared.outer_headers, entity, der), {}
    if name == "foreign-ca":
        seal = issue_unit_seal(foreign_ca, unit_code="finance", unit_name="财政局",
                               domain=DOMAIN, now=NOW)
        return sealed(Signer(seal.key, seal.certificate, (foreign_ca.certificate,))), {}
    if name == "expired":
        return sealed(_seal_with(city, now=NOW - timedelta(days=20),
                                 validity=timedelta(days=10))), {}
    if name == "not-yet-valid":
        return sealed(_seal_with(city, now=NOW + timedelta(days=2))), {}
    if name in ("revoked-crl", "revoked-ocsp"):
        signer = _seal_with(city, now=NOW - timedelta(days=1))
        raw = sealed(signer)
        revoked = Revocation(signer.certificate.serial_number, NOW - timedelta(hours=1),
                             RevocationReason.KEY_COMPROMISE)
        if name == "revoked-crl":
            crl = build_crl(city.ca, [revoked], now=NOW - timedelta(hours=1), crl_number=7)
            return raw, {"revocation": crl_check([crl])}
        from directory.ca import CertStatus, Status, build_ocsp_response
        from mailrelay.documents.revocation import ocsp_check

        def lookup(serial: int) -> CertStatus:
            assert serial == revoked.serial
            return CertStatus(Status.REVOKED, revoked.revoked_at, revoked.reason)

        def fetch(request: bytes) -> bytes:
            return build_ocsp_response(city.ca, request, lookup, now=NOW)
        return raw, {"revocation": ocsp_check(fetch, nonce=lambda: b"n" * 16)}
    if name == "no-email-protection":
        return sealed(_seal_with(city, now=NOW, email_protection=False)), {}
    if name == "bad-key-usage":
        return sealed(_bad_usage_seal(city.ca)), {}
    if name == "no-signer-cert":
        return sealed(city.signer(include_certificates=False)), {}
    if name == "sender-mismatch":
        return sealed(from_addr="stats.docs@cx.example"), {}
    if name == "not-signed":
        return b"From: a@cx.example\r\nSubject: hi\r\n\r\nplain text\r\n", {}
    if name == "malformed":
        return assemble_signed(prepared.outer_headers, entity, b"\x30\x03\x02\x01\x01"), {}
    raise AssertionError(name)


MATRIX = [
    ("tampered-body", "bad-digest"),
    ("tampered-header", "bad-digest"),
    ("wrong-digest", "bad-digest"),
    ("bad-signature", "bad-signature"),
    ("foreign-ca", "untrusted-issuer"),
    ("expired", "expired"),
    ("not-yet-valid", "not-yet-valid"),
    ("revoked-crl", "revoked"),
    ("revoked-ocsp", "revoked"),
    ("no-email-protection", "no-email-protection"),
    ("bad-key-usage", "bad-key-usage"),
    ("no-signer-cert", "no-signer-cert"),
    ("sender-mismatch", "sender-mismatch"),
    ("not-signed", "not-signed"),
    ("malformed", "malformed"),
]


@pytest.mark.parametrize(("case", "reason"), MATRIX, ids=[c for c, _ in MATRIX])
def test_trust_matrix(case: str, reason: str, city: City, foreign_ca: CertificateAuthority,
                      sealed: Callable[..., bytes]) -> None:
    raw, kw = _matrix_case(case, city, foreign_ca, sealed)
    verdict = check(raw, city, cache=VerifyCache(), **kw)
    assert not verdict.trusted
    assert verdict.reason == reason, verdict.text
    assert verdict.text


def test_missing_cert_found_in_directory(city: City, sealed: Callable[..., bytes]) -> None:
    raw = sealed(city.signer(include_certificates=False))
    verdict = check(raw, city, extra_certs=[city.finance.certificate])
    assert verdict.trusted, verdict.text


def test_revocation_good_and_unknown(city: City, sealed: Callable[..., bytes]) -> None:
    crl = build_crl(city.ca, [], now=NOW - timedelta(hours=1), crl_number=1)
    good = check(sealed(), city, revocation=crl_check([crl]))
    assert good.trusted and good.revocation_source == "crl"
    stale = build_crl(city.ca, [], now=NOW - timedelta(days=30), crl_number=1)
    assert check(sealed(), city, revocation=crl_check([stale])).trusted  # soft-fail default
    hard = check(sealed(), city, revocation=crl_check([stale]), require_revocation=True)
    assert hard.reason == "revocation-unknown"


def test_trust_anchors_pem_round_trip(city: City) -> None:
    again = TrustAnchors.from_pem(city.anchors.pem())
    assert again.key == city.anchors.key


def test_legacy_x_pkcs7_signature_type(city: City, sealed: Callable[..., bytes]) -> None:
    raw = sealed().replace(b"application/pkcs7-signature", b"application/x-pkcs7-signature")
    assert check(raw, city).trusted


def test_signer_certificate_by_subject_key_identifier(city: City) -> None:
    """RFC 5652 §5.3: sid may be a subjectKeyIdentifier; rewrite ours to that form."""
    from asn1crypto import cms as asn1_cms

    prepared = prepare()
    der = sign_detached(prepared.entity, city.signer())
    info = asn1_cms.ContentInfo.load(der)
    si = info["content"]["signer_infos"][0]
    ski = city.finance.certificate.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value.digest
    si["sid"] = asn1_cms.SignerIdentifier({"subject_key_identifier": ski})
    si["version"] = "v3"
    raw = assemble_signed(prepared.outer_headers, prepared.entity, info.dump(force=True))
    verdict = check(raw, city)
    assert verdict.trusted, verdict.text
