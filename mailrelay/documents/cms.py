"""Read and check CMS SignedData (RFC 5652) with asn1crypto parsing and cryptography math.

cryptography signs PKCS#7 but offers no CMS verification API; this module fills that gap
for the S/MIME profile we use: one SignerInfo, SHA-2 digests, RSA PKCS#1 v1.5, RSA-PSS
or ECDSA signatures.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from asn1crypto import algos as asn1_algos
from asn1crypto import cms as asn1_cms
from asn1crypto import core as asn1_core
from asn1crypto import tsp as asn1_tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

# RFC 8551 §2.1: SHA-256 MUST, SHA-512 SHOULD; SHA-1 and MD5 are not accepted here.
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class CmsError(Exception):
    """A SignedData that fails a check; ``reason`` is a Verdict reason code."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason
        self.text = text


# Encoded OIDs (tag, length, value) the fast reader compares byte for byte.
_OID_SIGNED_DATA = bytes.fromhex("06092a864886f70d010702")
_OID_CONTENT_TYPE = bytes.fromhex("06092a864886f70d010903")
_OID_MESSAGE_DIGEST = bytes.fromhex("06092a864886f70d010904")
_OID_SIGNING_TIME = bytes.fromhex("06092a864886f70d010905")
_OID_SIGNING_CERTIFICATE_V2 = bytes.fromhex("060b2a864886f70d010910022f")


@dataclass(frozen=True)
class SignedData:
    """The parts of a SignedData that verification needs, as plain values.

    Certificates and algorithm identifiers stay DER bytes: they are the same in every
    message from one signer, so what is derived from them is kept per exact bytes
    (:func:`load_certificate`, :func:`_signature_algorithm`)."""

    digest_name: str  # asn1crypto's name of the SignerInfo digestAlgorithm, e.g. "sha256"
    signature_algorithm: bytes  # the SignerInfo signatureAlgorithm, DER
    signature: bytes
    sid_kind: str  # "issuer_and_serial_number" | "subject_key_identifier"
    sid_issuer: bytes  # DER Name (issuer_and_serial_number)
    sid_serial: int
    sid_key_id: bytes  # (subject_key_identifier)
    certificates: tuple[bytes, ...]  # DER of each certificate the message carries
    encapsulated: bytes | None  # content of opaque signed-data, None when detached
    content_type: str
    # The signedAttrs exactly as received (content octets of the [0] IMPLICIT field).
    # The signature is checked over these very octets: asn1crypto re-encodes (and
    # re-sorts) a SET OF once its children have been touched, which would check a
    # signature over bytes the signer never signed.
    signed_attrs_contents: bytes | None = None


def parse_signed_data(der: bytes) -> SignedData:
    """Parse a DER ContentInfo holding SignedData (raises CmsError "malformed").

    A strict DER reader takes the usual case (no asn1crypto object per field, ~10x
    cheaper); anything outside it (BER indefinite lengths, other certificate choices,
    unknown OIDs, any irregularity) is read by asn1crypto, whose answer stands.
    """
    try:
        sd = _read_der(der)
    except _NotPlain:
        sd = _read_asn1crypto(der)
    if sd.signed_attrs_contents is not None:
        items = der_items(sd.signed_attrs_contents)
        # RFC 5652 §5.4 signs the DER of the SET OF, whose elements X.690 §11.6 sorts:
        # a set received out of order is not what a conforming signer signed (and
        # OpenSSL, re-encoding it, would refuse the signature).
        if items != sorted(items):
            raise CmsError("malformed", "signed attributes are not in DER order")
    return sd


class _NotPlain(Exception):
    """Outside what the fast DER reader takes: asn1crypto reads the SignedData."""


def _tlv_at(data: bytes, pos: int, end: int, tag: int) -> tuple[int, int]:
    """(start, end) of the contents of the TLV at ``pos`` whose tag must be ``tag``
    (X.690 §8.1: one-octet tag, definite length of at most 4 length octets)."""
    if pos + 2 > end or data[pos] != tag:
        raise _NotPlain
    length = data[pos + 1]
    start = pos + 2
    if length & 0x80:
        size = length & 0x7F
        if size == 0 or size > 4:
            raise _NotPlain  # indefinite (BER) or absurd length
        length = int.from_bytes(data[start:start + size], "big")
        start += size
    stop = start + length
    if stop > end:
        raise _NotPlain
    return start, stop


def _peek(data: bytes, pos: int, end: int) -> int:
    return data[pos] if pos < end else -1


def _read_der(der: bytes) -> SignedData:
    end = len(der)
    ci_s, ci_e = _tlv_at(der, 0, end, 0x30)  # ContentInfo
    oid_s, oid_e = _tlv_at(der, ci_s, ci_e, 0x06)
    if ci_e != end or der[ci_s:oid_e] != _OID_SIGNED_DATA:
        raise _NotPlain
    ex_s, ex_e = _tlv_at(der, oid_e, ci_e, 0xA0)  # [0] EXPLICIT content
    sd_s, sd_e = _tlv_at(der, ex_s, ex_e, 0x30)  # SignedData
    if ex_e != ci_e or sd_e != ex_e:
        raise _NotPlain
    pos = _tlv_at(der, sd_s, sd_e, 0x02)[1]  # version
    pos = _tlv_at(der, pos, sd_e, 0x31)[1]  # digestAlgorithms
    enc_s, enc_e = _tlv_at(der, pos, sd_e, 0x30)  # encapContentInfo
    ect_s, ect_e = _tlv_at(der, enc_s, enc_e, 0x06)
    content_type = _content_type_name(der[enc_s:ect_e])
    encapsulated = None
    if ect_e != enc_e:
        ec_s, ec_e = _tlv_at(der, ect_e, enc_e, 0xA0)
        os_s, os_e = _tlv_at(der, ec_s, ec_e, 0x04)  # a constructed OCTET STRING: asn1crypto
        if ec_e != enc_e or os_e != ec_e:
            raise _NotPlain
        encapsulated = der[os_s:os_e]
    pos = enc_e
    certs: list[bytes] = []
    if _peek(der, pos, sd_e) == 0xA0:  # certificates [0] IMPLICIT CertificateSet
        set_s, pos = _tlv_at(der, pos, sd_e, 0xA0)
        while set_s < pos:
            stop = _tlv_at(der, set_s, pos, 0x30)[1]  # other choices: asn1crypto
            certs.append(der[set_s:stop])
            set_s = stop
    if _peek(der, pos, sd_e) == 0xA1:  # crls [1] IMPLICIT: not used
        pos = _tlv_at(der, pos, sd_e, 0xA1)[1]
    si_set_s, si_set_e = _tlv_at(der, pos, sd_e, 0x31)
    si_s, si_e = _tlv_at(der, si_set_s, si_set_e, 0x30)
    if si_set_e != sd_e or si_e != si_set_e:
        raise _NotPlain  # not exactly one SignerInfo: asn1crypto counts and says so
    pos = _tlv_at(der, si_s, si_e, 0x02)[1]  # version
    issuer, serial, key_id = b"", 0, b""
    if _peek(der, pos, si_e) == 0x30:  # IssuerAndSerialNumber
        ias_s, ias_e = _tlv_at(der, pos, si_e, 0x30)
        name_e = _tlv_at(der, ias_s, ias_e, 0x30)[1]
        ser_s, ser_e = _tlv_at(der, name_e, ias_e, 0x02)
        if ser_e != ias_e or ser_s == ser_e:
            raise _NotPlain
        kind, issuer = "issuer_and_serial_number", der[ias_s:name_e]
        serial = int.from_bytes(der[ser_s:ser_e], "big", signed=True)
        pos = ias_e
    else:  # [0] IMPLICIT SubjectKeyIdentifier
        ski_s, pos = _tlv_at(der, pos, si_e, 0x80)
        kind, key_id = "subject_key_identifier", der[ski_s:pos]
    da_s = pos
    pos = _tlv_at(der, pos, si_e, 0x30)[1]
    digest_name = _digest_name(der[da_s:pos])
    attrs = None
    if _peek(der, pos, si_e) == 0xA0:
        at_s, pos = _tlv_at(der, pos, si_e, 0xA0)
        attrs = der[at_s:pos]
    sa_s = pos
    pos = sa_e = _tlv_at(der, pos, si_e, 0x30)[1]
    sig_s, pos = _tlv_at(der, pos, si_e, 0x04)
    signature = der[sig_s:pos]
    if _peek(der, pos, si_e) == 0xA1:  # unsignedAttrs
        pos = _tlv_at(der, pos, si_e, 0xA1)[1]
    if pos != si_e:
        raise _NotPlain
    return SignedData(digest_name, der[sa_s:sa_e], signature, kind, issuer, serial, key_id, tuple(certs), encapsulated,
                      content_type, attrs)


def _read_asn1crypto(der: bytes) -> SignedData:
    try:
        info = asn1_cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "signed_data":
            raise CmsError("malformed", f"CMS content is {info['content_type'].native}, "
                                        "not signed-data")
        sd = info["content"]
        signer_infos = list(sd["signer_infos"])
        if len(signer_infos) != 1:
            raise CmsError("malformed", f"expected one signer, found {len(signer_infos)}")
        si = signer_infos[0]
        cert_set = sd["certificates"]
        certs = () if isinstance(cert_set, asn1_core.Void) else tuple(
            c.chosen.dump() for c in cert_set if c.name == "certificate")
        encap = sd["encap_content_info"]
        attrs = si["signed_attrs"]
        raw_attrs = None if isinstance(attrs, asn1_core.Void) else bytes(attrs.contents or b"")
        sid = si["sid"]
        issuer, serial, key_id = b"", 0, b""
        if sid.name == "issuer_and_serial_number":
            issuer = sid.chosen["issuer"].dump()
            serial = int(sid.chosen["serial_number"].native)
        else:
            key_id = bytes(sid.chosen.native)
        return SignedData(str(si["digest_algorithm"]["algorithm"].native),
                          si["signature_algorithm"].dump(), bytes(si["signature"].native),
                          str(sid.name), issuer, serial, key_id, certs,
                          encap["content"].native, str(encap["content_type"].native),
                          raw_attrs)
    except CmsError:
        raise
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise CmsError("malformed", f"cannot parse CMS SignedData: {exc}") from exc


@functools.lru_cache(maxsize=64)
def _digest_name(algorithm_der: bytes) -> str:
    try:
        return str(asn1_algos.DigestAlgorithm.load(algorithm_der)["algorithm"].native)
    except (ValueError, TypeError, KeyError) as exc:
        raise _NotPlain from exc


@functools.lru_cache(maxsize=64)
def _content_type_name(oid_der: bytes) -> str:
    try:
        return str(asn1_cms.ContentType.load(oid_der).native)
    except (ValueError, TypeError) as exc:
        raise _NotPlain from exc


@functools.lru_cache(maxsize=64)
def _attribute_name(oid_der: bytes) -> str:
    try:
        return str(asn1_cms.CMSAttributeType.load(oid_der).native)
    except (ValueError, TypeError):
        return oid_der.hex()


@dataclass(frozen=True)
class SignedAttributes:
    message_digest: bytes | None
    signing_time: datetime | None
    content_type: str | None
    signing_certificate_v2: bytes | None = None  # the attribute value, DER (RFC 5035)


def signed_attributes(sd: SignedData) -> SignedAttributes | None:
    """The attributes verification checks, read from the octets as received."""
    if sd.signed_attrs_contents is None:
        return None
    values: dict[bytes, bytes] = {}
    for item in der_items(sd.signed_attrs_contents):
        # Attribute ::= SEQUENCE { attrType OBJECT IDENTIFIER, attrValues SET OF }
        try:
            body_s, body_e = _tlv_at(item, 0, len(item), 0x30)
            oid_e = _tlv_at(item, body_s, body_e, 0x06)[1]
            set_s, set_e = _tlv_at(item, oid_e, body_e, 0x31)
        except _NotPlain:
            raise CmsError("malformed", "bad DER in signed attributes") from None
        if set_e != body_e:
            raise CmsError("malformed", "bad DER in signed attributes")
        oid = item[body_s:oid_e]  # the OID's TLV
        if oid in values:
            # RFC 5652 §5.3: these attributes MUST NOT appear more than once.
            raise CmsError("malformed", f"signed attribute {_attribute_name(oid)} repeated")
        vals = der_items(item[set_s:set_e])
        if len(vals) != 1:
            raise CmsError("malformed",
                           f"signed attribute {_attribute_name(oid)} must have one value")
        values[oid] = vals[0]
    digest = values.get(_OID_MESSAGE_DIGEST)
    if digest is not None:  # only what verification uses is decoded
        digest = _primitive(digest, 0x04, "messageDigest")
    ctype = values.get(_OID_CONTENT_TYPE)
    when = values.get(_OID_SIGNING_TIME)
    return SignedAttributes(
        digest,
        _signing_time(when) if when is not None else None,
        _content_type_attr(ctype) if ctype is not None else None,
        values.get(_OID_SIGNING_CERTIFICATE_V2))


def _primitive(tlv: bytes, tag: int, what: str) -> bytes:
    try:
        start, stop = _tlv_at(tlv, 0, len(tlv), tag)
    except _NotPlain:
        raise CmsError("malformed", f"signed attribute {what} is not well formed") from None
    return tlv[start:stop]


def _content_type_attr(tlv: bytes) -> str:
    _primitive(tlv, 0x06, "contentType")
    try:
        return _content_type_name(tlv)
    except _NotPlain:
        raise CmsError("malformed", "signed attribute contentType is not an OID") from None


_UTC_TIME = re.compile(rb"\x17\x0d([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})Z")


def _signing_time(tlv: bytes) -> datetime | None:
    # RFC 5652 §11.3: Time ::= CHOICE { utcTime UTCTime, generalTime GeneralizedTime };
    # a signingTime from 1950 to 2049 MUST be UTCTime, in DER YYMMDDHHMMSSZ (X.690
    # §11.8), read here; anything else by asn1crypto.
    plain = _UTC_TIME.fullmatch(tlv)
    if plain is not None:
        yy, mo, dd, hh, mi, ss = (int(x) for x in plain.groups())
        try:
            # RFC 5280 §4.1.2.5.1: YY >= 50 is 19YY, else 20YY.
            return datetime(yy + (1900 if yy >= 50 else 2000), mo, dd, hh, mi, ss,
                            tzinfo=UTC)
        except ValueError as exc:
            raise CmsError("malformed", f"signed attribute signingTime: {exc}") from None
    try:
        if tlv[:1] == b"\x17":
            when = asn1_core.UTCTime.load(tlv, strict=True).native
        elif tlv[:1] == b"\x18":
            when = asn1_core.GeneralizedTime.load(tlv, strict=True).native
        else:
            raise ValueError("not a Time")
    except (ValueError, TypeError) as exc:
        raise CmsError("malformed", f"signed attribute signingTime: {exc}") from None
    return when if isinstance(when, datetime) else None


def content_digest(content: bytes, digest_name: str) -> bytes:
    if digest_name not in _HASHES:
        raise CmsError("weak-algorithm", f"digest algorithm {digest_name} not accepted")
    return hashlib.new(digest_name, content).digest()


def check_digest(sd: SignedData, content: bytes
                 ) -> tuple[bytes, datetime | None, SignedAttributes | None]:
    """Check the messageDigest attribute; returns (digest, signingTime, attributes)."""
    digest = content_digest(content, sd.digest_name)
    attrs = signed_attributes(sd)
    if attrs is None:
        return digest, None, None  # no attributes: the signature covers the content
    # RFC 5652 §11.1: contentType attribute MUST equal eContentType.
    if attrs.content_type != sd.content_type:
        raise CmsError("malformed", "contentType attribute does not match eContentType")
    # RFC 5652 §11.2: messageDigest MUST be present and equal the content's digest.
    if attrs.message_digest is None:
        raise CmsError("malformed", "signed attributes without messageDigest")
    if not hmac.compare_digest(attrs.message_digest, digest):
        raise CmsError("bad-digest", "the content does not match the digest that was sealed")
    return digest, attrs.signing_time, attrs


def check_signing_certificate(attrs: SignedAttributes | None, cert_der: bytes) -> None:
    """RFC 5035 §3 (ESS signingCertificateV2, CAdES-BES): when the signed attributes name
    the signer's certificate, the first one named MUST be the certificate whose key
    verified the signature; else a certificate was substituted. Signers that do not
    send the attribute (mail clients) are not refused for that."""
    if attrs is None or attrs.signing_certificate_v2 is None:
        return
    hash_name, cert_hash = _ess_cert_id(attrs.signing_certificate_v2)
    if hash_name not in _HASHES:
        raise CmsError("weak-algorithm", f"signingCertificateV2 hash {hash_name} not accepted")
    if not hmac.compare_digest(hashlib.new(hash_name, cert_der).digest(), cert_hash):
        raise CmsError("bad-certificate", "the seal names another certificate than the one"
                                          " it carries (ESS signingCertificateV2)")


@functools.lru_cache(maxsize=256)
def _ess_cert_id(value: bytes) -> tuple[str, bytes]:
    """(hash name, certHash) of the first ESSCertIDv2 (the same bytes in every document
    of one signer: read once)."""
    try:
        first = asn1_tsp.SigningCertificateV2.load(value, strict=True)["certs"][0]
        name = str(first["hash_algorithm"]["algorithm"].native)  # DEFAULT sha256
        return name, bytes(first["cert_hash"].native)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise CmsError("malformed", f"unreadable signingCertificateV2: {exc}") from None


def signed_bytes(sd: SignedData, content: bytes) -> bytes:
    """What the signature covers (RFC 5652 §5.4)."""
    if sd.signed_attrs_contents is None:
        return content
    # RFC 5652 §5.4: the DER of the attributes with an EXPLICIT SET OF tag (0x31), not
    # the IMPLICIT [0] tag they carry in SignerInfo, over the octets that were received.
    return _tlv(0x31, sd.signed_attrs_contents)


def der_items(data: bytes) -> list[bytes]:
    """The encoded elements (TLVs) of a DER content octet string, in order."""
    items: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        if pos + 2 > end or data[pos] & 0x1F == 0x1F:
            raise CmsError("malformed", "bad DER in signed attributes")
        length, head = data[pos + 1], 2
        if length & 0x80:
            size = length & 0x7F
            if size == 0 or size > 4 or pos + 2 + size > end:
                raise CmsError("malformed", "bad DER length in signed attributes")
            length = int.from_bytes(data[pos + 2:pos + 2 + size], "big")
            head += size
        if pos + head + length > end:
            raise CmsError("malformed", "truncated signed attributes")
        items.append(data[pos:pos + head + length])
        pos += head + length
    return items


def _tlv(tag: int, content: bytes) -> bytes:
    """One DER TLV (X.690 §8.1.3: definite length, short or long form)."""
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + content


@functools.lru_cache(maxsize=1024)
def load_certificate(der: bytes) -> x509.Certificate:
    """A certificate from DER, kept per exact bytes (certificates are immutable; the same
    seal and CA arrive with every document, so each is parsed once per process)."""
    return x509.load_der_x509_certificate(der)


def find_signer_certificate(sd: SignedData,
                            extra: Sequence[x509.Certificate] = ()) -> x509.Certificate:
    """The certificate named by the SignerIdentifier (RFC 5652 §5.3), from the message or
    from ``extra`` (certificates the caller already knows, e.g. from the directory)."""
    if sd.sid_kind == "issuer_and_serial_number":
        serial, issuer_der = sd.sid_serial, sd.sid_issuer
        # Same DER is the usual case; Name.__eq__ (RFC 5280 §7.1 string prep) is slow.
        for der in sd.certificates:
            cert = load_certificate(der)
            if cert.serial_number == serial and _same_name(issuer_of(cert), issuer_der):
                return cert
        for known in extra:
            if known.serial_number == serial and _same_name(issuer_of(known), issuer_der):
                return known
    elif sd.sid_kind == "subject_key_identifier":
        ski = sd.sid_key_id
        for der in sd.certificates:
            cert = load_certificate(der)
            if _key_identifier(cert) == ski:
                return cert
        for known in extra:
            if _key_identifier(known) == ski:
                return known
    raise CmsError("no-signer-cert", "the signer's certificate is not in the message")


def _same_name(a: bytes, b: bytes) -> bool:
    if a == b:
        return True
    try:
        return bool(asn1_x509.Name.load(a) == asn1_x509.Name.load(b))
    except (ValueError, TypeError):
        return False


@functools.lru_cache(maxsize=1024)
def issuer_of(cert: x509.Certificate) -> bytes:
    """The DER of a certificate's issuer Name (kept per certificate: immutable)."""
    return cert.issuer.public_bytes()


@functools.lru_cache(maxsize=1024)
def _key_identifier(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


@dataclass(frozen=True)
class _SignatureAlgorithm:
    name: str  # asn1crypto's signature_algo: "rsassa_pkcs1v15", "rsassa_pss", "ecdsa", ...
    pss_hash: type[hashes.HashAlgorithm] | None = None
    mgf_hash: type[hashes.HashAlgorithm] | None = None
    salt_length: int = 0


@functools.lru_cache(maxsize=64)
def _signature_algorithm(algorithm_der: bytes) -> _SignatureAlgorithm:
    """The signatureAlgorithm of a SignerInfo, read once per distinct encoding."""
    try:
        algo = asn1_algos.SignedDigestAlgorithm.load(algorithm_der)
        name = algo.signature_algo
    except (ValueError, TypeError, KeyError) as exc:
        raise CmsError("bad-signature", f"unknown signature algorithm: {exc}") from exc
    if name != "rsassa_pss":
        return _SignatureAlgorithm(name)
    try:
        params = algo["parameters"]
        pss_hash = _HASHES.get(str(params["hash_algorithm"]["algorithm"].native))
        mgf_hash = _HASHES.get(
            str(params["mask_gen_algorithm"]["parameters"]["algorithm"].native))
        salt = int(params["salt_length"].native)
    except (ValueError, TypeError, KeyError) as exc:
        raise CmsError("malformed", f"bad RSA-PSS parameters: {exc}") from exc
    if pss_hash is None or mgf_hash is None:
        raise CmsError("weak-algorithm", "RSA-PSS with an unaccepted hash")
    return _SignatureAlgorithm(name, pss_hash, mgf_hash, salt)


def check_signature(sd: SignedData, content: bytes, cert: x509.Certificate) -> None:
    """Verify the SignerInfo signature with the certificate's public key."""
    hash_cls = _HASHES.get(sd.digest_name)
    if hash_cls is None:
        raise CmsError("weak-algorithm", f"digest algorithm {sd.digest_name} not accepted")
    algo = _signature_algorithm(sd.signature_algorithm)
    data = signed_bytes(sd, content)
    key = cert.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey) and algo.name == "rsassa_pss":
            assert algo.pss_hash is not None and algo.mgf_hash is not None
            pss = padding.PSS(mgf=padding.MGF1(algo.mgf_hash()), salt_length=algo.salt_length)
            key.verify(sd.signature, data, pss, algo.pss_hash())
        elif isinstance(key, rsa.RSAPublicKey) and algo.name == "rsassa_pkcs1v15":
            key.verify(sd.signature, data, padding.PKCS1v15(), hash_cls())
        elif isinstance(key, ec.EllipticCurvePublicKey) and algo.name == "ecdsa":
            key.verify(sd.signature, data, ec.ECDSA(hash_cls()))
        else:
            raise CmsError("bad-signature", f"signature algorithm {algo.name} does not fit "
                                            f"a {type(key).__name__}")
    except InvalidSignature as exc:
        raise CmsError("bad-signature", "the seal's signature does not verify") from exc
