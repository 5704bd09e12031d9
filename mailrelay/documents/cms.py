"""Read and check CMS SignedData (RFC 5652) with asn1crypto parsing and cryptography math.

cryptography signs PKCS#7 but offers no CMS verification API; this module fills that gap
for the S/MIME profile we use: one SignerInfo, SHA-2 digests, RSA PKCS#1 v1.5, RSA-PSS
or ECDSA signatures.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import cms as asn1_cms
from asn1crypto import core as asn1_core
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


@dataclass(frozen=True)
class SignedData:
    """The parts of a SignedData that verification needs."""

    signer_info: asn1_cms.SignerInfo
    certificates: tuple[asn1_x509.Certificate, ...]
    encapsulated: bytes | None  # content of opaque signed-data, None when detached
    content_type: str
    # The signedAttrs exactly as received (content octets of the [0] IMPLICIT field),
    # captured before anything reads them: asn1crypto re-encodes (and re-sorts) a SET OF
    # once its children have been touched, which costs ~25 ms and would check a
    # signature over bytes the signer never signed.
    signed_attrs_contents: bytes | None = None

    @property
    def digest_name(self) -> str:
        return str(self.signer_info["digest_algorithm"]["algorithm"].native)


def parse_signed_data(der: bytes) -> SignedData:
    """Parse a DER ContentInfo holding SignedData (raises CmsError "malformed")."""
    try:
        info = asn1_cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "signed_data":
            raise CmsError("malformed", f"CMS content is {info['content_type'].native}, "
                                        "not signed-data")
        sd = info["content"]
        signer_infos = list(sd["signer_infos"])
        if len(signer_infos) != 1:
            raise CmsError("malformed", f"expected one signer, found {len(signer_infos)}")
        cert_set = sd["certificates"]
        certs = () if isinstance(cert_set, asn1_core.Void) else tuple(
            c.chosen for c in cert_set if c.name == "certificate")
        encap = sd["encap_content_info"]
        attrs = signer_infos[0]["signed_attrs"]
        raw_attrs = None if isinstance(attrs, asn1_core.Void) else bytes(attrs.contents or b"")
        if raw_attrs is not None:
            items = der_items(raw_attrs)
            # RFC 5652 §5.4 signs the DER of the SET OF, whose elements X.690 §11.6 sorts:
            # a set received out of order is not what a conforming signer signed (and
            # OpenSSL, re-encoding it, would refuse the signature).
            if items != sorted(items):
                raise CmsError("malformed", "signed attributes are not in DER order")
        return SignedData(signer_infos[0], certs, encap["content"].native,
                          str(encap["content_type"].native), raw_attrs)
    except CmsError:
        raise
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise CmsError("malformed", f"cannot parse CMS SignedData: {exc}") from exc


@dataclass(frozen=True)
class SignedAttributes:
    message_digest: bytes | None
    signing_time: datetime | None
    content_type: str | None


def signed_attributes(si: asn1_cms.SignerInfo) -> SignedAttributes | None:
    attrs = si["signed_attrs"]
    if isinstance(attrs, asn1_core.Void):
        return None
    values: dict[str, object] = {}
    seen: set[str] = set()
    for attr in attrs:
        name = attr["type"].native
        if name in seen:
            # RFC 5652 §5.3: these attributes MUST NOT appear more than once.
            raise CmsError("malformed", f"signed attribute {name} repeated")
        seen.add(name)
        vals = attr["values"]
        if len(vals) != 1:
            raise CmsError("malformed", f"signed attribute {name} must have one value")
        if name in _READ_ATTRS:  # only what verification uses is decoded
            values[name] = vals[0].native
    digest = values.get("message_digest")
    when = values.get("signing_time")
    ctype = values.get("content_type")
    return SignedAttributes(
        digest if isinstance(digest, bytes) else None,
        when if isinstance(when, datetime) else None,
        ctype if isinstance(ctype, str) else None,
    )


_READ_ATTRS = frozenset({"message_digest", "signing_time", "content_type"})


def content_digest(content: bytes, digest_name: str) -> bytes:
    if digest_name not in _HASHES:
        raise CmsError("weak-algorithm", f"digest algorithm {digest_name} not accepted")
    return hashlib.new(digest_name, content).digest()


def check_digest(sd: SignedData, content: bytes) -> tuple[bytes, datetime | None]:
    """Check the messageDigest attribute; returns (digest, signingTime)."""
    digest = content_digest(content, sd.digest_name)
    attrs = signed_attributes(sd.signer_info)
    if attrs is None:
        return digest, None  # no attributes: the signature covers the content directly
    # RFC 5652 §11.1: contentType attribute MUST equal eContentType.
    if attrs.content_type != sd.content_type:
        raise CmsError("malformed", "contentType attribute does not match eContentType")
    # RFC 5652 §11.2: messageDigest MUST be present and equal the content's digest.
    if attrs.message_digest is None:
        raise CmsError("malformed", "signed attributes without messageDigest")
    if not hmac.compare_digest(attrs.message_digest, digest):
        raise CmsError("bad-digest", "the content does not match the digest that was sealed")
    return digest, attrs.signing_time


def signed_bytes(si: asn1_cms.SignerInfo, content: bytes,
                 attrs_contents: bytes | None = None) -> bytes:
    """What the signature covers (RFC 5652 §5.4). ``attrs_contents``: the signedAttrs
    content octets as received (:attr:`SignedData.signed_attrs_contents`)."""
    attrs = si["signed_attrs"]
    if isinstance(attrs, asn1_core.Void):
        return content
    if attrs_contents is None:
        attrs_contents = bytes(attrs.contents or b"")
    # RFC 5652 §5.4: the DER of the attributes with an EXPLICIT SET OF tag (0x31), not
    # the IMPLICIT [0] tag they carry in SignerInfo, over the octets that were received.
    return _tlv(0x31, attrs_contents)


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
    sid = sd.signer_info["sid"]
    if sid.name == "issuer_and_serial_number":
        issuer = sid.chosen["issuer"]
        issuer_der = issuer.dump()
        serial = sid.chosen["serial_number"].native
        # Same DER is the usual case; Name.__eq__ (RFC 5280 §7.1 string prep) is slow.
        for cert in sd.certificates:
            if cert.serial_number == serial and (cert.issuer.dump() == issuer_der
                                                 or cert.issuer == issuer):
                return load_certificate(cert.dump())
        for known in extra:
            if known.serial_number == serial and (
                    known.issuer.public_bytes() == issuer_der
                    or asn1_x509.Name.load(known.issuer.public_bytes()) == issuer):
                return known
    elif sid.name == "subject_key_identifier":
        ski = sid.chosen.native
        for cert in sd.certificates:
            if cert.key_identifier == ski:
                return load_certificate(cert.dump())
        for known in extra:
            try:
                ext = known.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            except x509.ExtensionNotFound:
                continue
            if ext.value.digest == ski:
                return known
    raise CmsError("no-signer-cert", "the signer's certificate is not in the message")


def check_signature(si: asn1_cms.SignerInfo, content: bytes, cert: x509.Certificate,
                    attrs_contents: bytes | None = None) -> None:
    """Verify the SignerInfo signature with the certificate's public key."""
    digest_name = str(si["digest_algorithm"]["algorithm"].native)
    if digest_name not in _HASHES:
        raise CmsError("weak-algorithm", f"digest algorithm {digest_name} not accepted")
    hash_alg = _HASHES[digest_name]()
    algo = si["signature_algorithm"]
    data = signed_bytes(si, content, attrs_contents)
    signature = si["signature"].native
    key = cert.public_key()
    try:
        sig_algo = algo.signature_algo
    except ValueError as exc:
        raise CmsError("bad-signature", f"unknown signature algorithm: {exc}") from exc
    try:
        if isinstance(key, rsa.RSAPublicKey) and sig_algo == "rsassa_pss":
            params = algo["parameters"]
            pss_hash = _HASHES.get(str(params["hash_algorithm"]["algorithm"].native))
            mgf_hash = _HASHES.get(
                str(params["mask_gen_algorithm"]["parameters"]["algorithm"].native))
            if pss_hash is None or mgf_hash is None:
                raise CmsError("weak-algorithm", "RSA-PSS with an unaccepted hash")
            pss = padding.PSS(mgf=padding.MGF1(mgf_hash()),
                              salt_length=int(params["salt_length"].native))
            key.verify(signature, data, pss, pss_hash())
        elif isinstance(key, rsa.RSAPublicKey) and sig_algo == "rsassa_pkcs1v15":
            key.verify(signature, data, padding.PKCS1v15(), hash_alg)
        elif isinstance(key, ec.EllipticCurvePublicKey) and sig_algo == "ecdsa":
            key.verify(signature, data, ec.ECDSA(hash_alg))
        else:
            raise CmsError("bad-signature", f"signature algorithm {sig_algo} does not fit "
                                            f"a {type(key).__name__}")
    except InvalidSignature as exc:
        raise CmsError("bad-signature", "the seal's signature does not verify") from exc
