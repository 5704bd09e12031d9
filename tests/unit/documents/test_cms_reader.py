"""The fast DER reader of CMS SignedData (cms._read_der) says nothing asn1crypto would not.

Whenever the fast reader accepts bytes, asn1crypto must read the very same values from
them; whatever the fast reader declines (BER, other choices, damage) is read by
asn1crypto, so a verdict never depends on which reader ran.
"""

from __future__ import annotations

import pytest
from asn1crypto import cms as asn1_cms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailrelay.documents import cms
from mailrelay.documents.seal import sign_detached
from mailrelay.documents.verify import verify_detached

from .conftest import NOW, City, prepare


@pytest.fixture(scope="module")
def signature(city: City) -> tuple[bytes, bytes]:
    prepared = prepare()
    return prepared.entity, sign_detached(prepared.entity, city.signer())


def test_fast_reader_reads_our_seal_like_asn1crypto(signature: tuple[bytes, bytes]) -> None:
    _, der = signature
    fast = cms._read_der(der)
    assert fast == cms._read_asn1crypto(der)
    assert fast.digest_name == "sha256" and fast.content_type == "data"
    assert fast.sid_kind == "issuer_and_serial_number" and len(fast.certificates) == 2
    assert fast.encapsulated is None and fast.signed_attrs_contents


def _agree(der: bytes) -> None:
    try:
        fast = cms._read_der(der)
    except cms._NotPlain:
        return  # asn1crypto decides alone
    except cms.CmsError as err:  # pragma: no cover - the fast reader never says why
        pytest.fail(f"the fast reader raised {err.reason}: it must decline instead")
    try:
        slow = cms._read_asn1crypto(der)
    except cms.CmsError as err:
        pytest.fail(f"the fast reader accepted what asn1crypto refuses ({err.text})")
    assert fast == slow


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.integers(min_value=0, max_value=4000), value=st.integers(0, 255),
       cut=st.booleans())
def test_fast_reader_agrees_on_damaged_input(signature: tuple[bytes, bytes], pos: int,
                                             value: int, cut: bool) -> None:
    _, der = signature
    pos %= len(der)
    damaged = der[:pos] if cut else der[:pos] + bytes([value]) + der[pos + 1:]
    _agree(damaged)


def test_every_single_byte_flip_of_the_structure(signature: tuple[bytes, bytes]) -> None:
    """Each byte of the headers up to the signed attributes, changed to each of a few
    tag-like values: the fast reader declines or agrees with asn1crypto."""
    _, der = signature
    end = der.index(cms._OID_MESSAGE_DIGEST)
    for pos in range(0, end, 7):
        for value in (0x00, 0x02, 0x04, 0x06, 0x30, 0x31, 0x80, 0x81, 0x84, 0xA0, 0xA1):
            _agree(der[:pos] + bytes([value]) + der[pos + 1:])


def test_ber_indefinite_length_is_read_by_asn1crypto(city: City,
                                                     signature: tuple[bytes, bytes]) -> None:
    """A BER encoding (indefinite lengths, as some S/MIME tools stream) still verifies:
    the fast reader declines, asn1crypto reads it."""
    content, der = signature
    ber = _indefinite(der)
    with pytest.raises(cms._NotPlain):
        cms._read_der(ber)
    assert cms.parse_signed_data(ber) == cms.parse_signed_data(der)
    verdict = verify_detached(content, ber, city.anchors, now=NOW)
    assert verdict.trusted, verdict.text


def _indefinite(der: bytes) -> bytes:
    """ContentInfo and its [0] wrapper with indefinite lengths (X.690 §8.1.3.6)."""
    ci_s, ci_e = cms._tlv_at(der, 0, len(der), 0x30)
    oid_e = cms._tlv_at(der, ci_s, ci_e, 0x06)[1]
    ex_s, ex_e = cms._tlv_at(der, oid_e, ci_e, 0xA0)
    signed_data = der[ex_s:ex_e]
    assert asn1_cms.SignedData.load(signed_data)["version"].native
    return (b"\x30\x80" + der[ci_s:oid_e] + b"\xa0\x80" + signed_data + b"\x00\x00"
            + b"\x00\x00")


def test_signed_attributes_repeated_or_multi_valued_are_malformed(
        signature: tuple[bytes, bytes]) -> None:
    _, der = signature
    sd = cms.parse_signed_data(der)
    assert sd.signed_attrs_contents is not None
    items = cms.der_items(sd.signed_attrs_contents)
    digest = next(i for i in items if cms._OID_MESSAGE_DIGEST in i)
    twice = b"".join(sorted([*items, digest]))
    with pytest.raises(cms.CmsError, match="repeated"):
        cms.signed_attributes(_with_attrs(sd, twice))
    # messageDigest with two values in its SET
    body = digest[2:]
    oid = cms._OID_MESSAGE_DIGEST
    values = body[len(oid):]
    value = values[2:]
    two = oid + cms._tlv(0x31, value + value)
    bad = [cms._tlv(0x30, two) if i == digest else i for i in items]
    with pytest.raises(cms.CmsError, match="one value"):
        cms.signed_attributes(_with_attrs(sd, b"".join(bad)))
    # messageDigest that is not an OCTET STRING
    wrong = [cms._tlv(0x30, oid + cms._tlv(0x31, b"\x02" + value[1:])) if i == digest else i
             for i in items]
    with pytest.raises(cms.CmsError, match="messageDigest"):
        cms.signed_attributes(_with_attrs(sd, b"".join(wrong)))


def _with_attrs(sd: cms.SignedData, attrs: bytes) -> cms.SignedData:
    import dataclasses
    return dataclasses.replace(sd, signed_attrs_contents=attrs)


def test_fast_reader_reads_opaque_signed_data_like_asn1crypto(city: City) -> None:
    """cryptography's PKCS#7 builder (opaque: the content is encapsulated)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
    der = (pkcs7.PKCS7SignatureBuilder().set_data(b"content\r\n")
           .add_signer(city.stats.certificate, city.stats.key, hashes.SHA256())
           .sign(Encoding.DER, [pkcs7.PKCS7Options.Binary]))
    fast = cms._read_der(der)
    assert fast == cms._read_asn1crypto(der)
    assert fast.encapsulated == b"content\r\n"


@pytest.mark.parametrize("text", [b"260304093000Z", b"500101000000Z", b"491231235959Z",
                                  b"000229120000Z", b"991231235959Z"])
def test_signing_time_reads_utc_time_like_asn1crypto(text: bytes) -> None:
    from asn1crypto import core as asn1_core
    tlv = b"\x17" + bytes([len(text)]) + text
    assert cms._signing_time(tlv) == asn1_core.UTCTime.load(tlv).native


@pytest.mark.parametrize("tlv", [b"\x17\x0d260230093000Z", b"\x17\x0d261304093000Z",
                                 b"\x02\x01\x00"])
def test_bad_signing_time_is_malformed(tlv: bytes) -> None:
    with pytest.raises(cms.CmsError):
        cms._signing_time(tlv)


def test_substituted_certificate_is_refused(city: City, monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 5035: the signed attributes name the signer certificate by its hash; a seal
    whose ESS signingCertificateV2 names another certificate than the one that verified
    it (a certificate substituted after signing) is refused."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from mailrelay.documents import seal
    real = seal._signer_parts
    other = city.stats.certificate

    def parts(cert_der: bytes, issuer_der: bytes, serial: int) -> tuple[bytes, bytes]:
        ess, _ = real(other.public_bytes(Encoding.DER), other.issuer.public_bytes(),
                      other.serial_number)
        return ess, real(cert_der, issuer_der, serial)[1]
    monkeypatch.setattr(seal, "_signer_parts", parts)
    prepared = prepare()
    der = sign_detached(prepared.entity, city.signer())
    verdict = verify_detached(prepared.entity, der, city.anchors, now=NOW)
    assert not verdict.trusted and verdict.reason == "bad-certificate", verdict
    assert "signingCertificateV2" in verdict.text
    monkeypatch.setattr(seal, "_signer_parts", real)
    good = sign_detached(prepared.entity, city.signer())
    assert verify_detached(prepared.entity, good, city.anchors, now=NOW).trusted
