"""Seal official documents: S/MIME multipart/signed (RFC 8551 §3.5) with a unit's seal.

The only CPU-heavy step is :func:`sign_detached`, a plain function the server runs in an
executor. Everything around it is cheap byte assembly. The entity is signed once and then
copied verbatim into the message: nothing re-folds or re-encodes it afterwards.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from asn1crypto import algos as asn1_algos
from asn1crypto import cms as asn1_cms
from asn1crypto import core as asn1_core
from asn1crypto import tsp as asn1_tsp  # registers the signingCertificateV2 attribute
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from .docmime import Attachment, DocumentMeta, Envelope, build_document_entity, document_headers
from .mimeparts import CRLF, base64_body, header, new_boundary

SignerKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

PREAMBLE = b"This is a cryptographically signed message in MIME format.\r\n"


@dataclass(frozen=True)
class Signer:
    """A seal: private key, its certificate, and CA certificates to include (optional)."""

    key: SignerKey = field(repr=False)
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()
    rsa_pss: bool = False  # RFC 8551 §2.2: RSASSA-PSS SHOULD+ be supported by receivers
    include_certificates: bool = True  # False only to test "no-signer-cert"


def _der(tag: int, content: bytes) -> bytes:
    """One DER TLV (X.690 §8.1: definite length, short or long form)."""
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + content


def _attribute(oid: str, value_der: bytes) -> bytes:
    """RFC 5652 §5.3 Attribute: SEQUENCE { attrType OID, attrValues SET OF value }."""
    return _der(0x30, asn1_core.ObjectIdentifier(oid).dump() + _der(0x31, value_der))


_OID_DATA = "1.2.840.113549.1.7.1"
_DIGEST_SHA256 = asn1_algos.DigestAlgorithm({"algorithm": "sha256"}).dump()
_CONTENT_TYPE_ATTR = _attribute("1.2.840.113549.1.9.3",
                                asn1_core.ObjectIdentifier(_OID_DATA).dump())
# RFC 8551 §2.5.2: the capabilities we can decrypt (AES-256-CBC, AES-128-CBC).
_CAPS_ATTR = _attribute("1.2.840.113549.1.9.15", asn1_cms.SMIMECapabilites(
    [{"capability_id": "aes256_cbc"}, {"capability_id": "aes128_cbc"}]).dump())
_SIG_RSA = asn1_algos.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15"}).dump()
_SIG_ECDSA = asn1_algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"}).dump()
_SIG_PSS = asn1_algos.SignedDigestAlgorithm({"algorithm": "rsassa_pss", "parameters": {
    "hash_algorithm": {"algorithm": "sha256"},
    "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha256"}},
    "salt_length": 32, "trailer_field": "trailer_field_bc"}}).dump()


@functools.lru_cache(maxsize=256)
def _signer_parts(cert_der: bytes, issuer_der: bytes, serial: int) -> tuple[bytes, bytes]:
    """(ESS signingCertificateV2 attribute, SignerIdentifier) of one certificate."""
    issuer = asn1_x509.Name.load(issuer_der)
    ess = asn1_tsp.SigningCertificateV2({"certs": [{
        # RFC 5035 §5.4.1.1: hashAlgorithm DEFAULT sha256 (so left out)
        "cert_hash": hashlib.sha256(cert_der).digest(),
        "issuer_serial": {"issuer": [asn1_x509.GeneralName(name="directory_name",
                                                           value=issuer)],
                          "serial_number": serial}}]})
    sid = asn1_cms.IssuerAndSerialNumber({"issuer": asn1_x509.Name.load(issuer_der),
                                          "serial_number": serial})
    return _attribute("1.2.840.113549.1.9.16.2.47", ess.dump()), sid.dump()


def sign_detached(content: bytes, signer: Signer, *, now: datetime | None = None) -> bytes:
    """DER CMS SignedData (RFC 5652) over ``content`` exactly as given, without the content.

    Signed attributes: contentType, signingTime, messageDigest (RFC 8551 §2.5),
    smimeCapabilities and ESS signingCertificateV2 (RFC 5035 §3: the SHA-256 of the
    signer certificate and its issuer and serial), so the seal is CAdES-BES and the
    signer certificate cannot be substituted. The DER is assembled from cached pieces
    (asn1crypto builds them once per certificate). Blocking: run it in an executor.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    cert_der = signer.certificate.public_bytes(serialization.Encoding.DER)
    ess_attr, sid = _signer_parts(cert_der, signer.certificate.issuer.public_bytes(),
                                  signer.certificate.serial_number)
    when = now.strftime("%y%m%d%H%M%SZ").encode("ascii")  # RFC 5652 §11.3: UTCTime < 2050
    attrs = [
        _CONTENT_TYPE_ATTR,
        _attribute("1.2.840.113549.1.9.5", _der(0x17, when)),
        _attribute("1.2.840.113549.1.9.4", _der(0x04, hashlib.sha256(content).digest())),
        _CAPS_ATTR,
        ess_attr,
    ]
    attrs_content = b"".join(sorted(attrs))  # X.690 §11.6: SET OF in sorted order
    # RFC 5652 §5.4: the signature covers the attributes as an explicit SET OF.
    to_sign = _der(0x31, attrs_content)
    key = signer.key
    if isinstance(key, rsa.RSAPrivateKey) and signer.rsa_pss:
        signature = key.sign(to_sign, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                  salt_length=32), hashes.SHA256())
        sig_alg = _SIG_PSS
    elif isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
        sig_alg = _SIG_RSA
    else:
        signature = key.sign(to_sign, ec.ECDSA(hashes.SHA256()))
        sig_alg = _SIG_ECDSA
    signer_info = _der(0x30, _der(0x02, b"\x01") + sid + _DIGEST_SHA256
                       + _der(0xA0, attrs_content)  # [0] IMPLICIT signedAttrs
                       + sig_alg + _der(0x04, signature))
    certs = b""
    if signer.include_certificates:
        certs = _der(0xA0, cert_der + b"".join(  # [0] IMPLICIT CertificateSet
            c.public_bytes(serialization.Encoding.DER) for c in signer.chain))
    signed_data = _der(0x30, _der(0x02, b"\x01") + _der(0x31, _DIGEST_SHA256)
                       + _der(0x30, asn1_core.ObjectIdentifier(_OID_DATA).dump())  # detached
                       + certs + _der(0x31, signer_info))
    return _der(0x30, asn1_core.ObjectIdentifier("1.2.840.113549.1.7.2").dump()
                + _der(0xA0, signed_data))


def assemble_signed(outer_headers: Sequence[bytes], entity: bytes, signature_der: bytes, *,
                    boundary: str | None = None) -> bytes:
    """Wrap ``entity`` and its detached signature as multipart/signed, CRLF bytes.

    ``entity`` is copied byte for byte; it must end with CRLF (ours always do).
    """
    if not entity.endswith(CRLF):
        entity += CRLF  # the signer must have signed it this way too: see seal_entity
    boundary = boundary or new_boundary()
    # RFC 8551 §3.5.3.2: micalg names the digest; protocol is the signature's type.
    ctype = (f'multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256; '
             f'boundary="{boundary}"')
    head = b"".join(outer_headers) + header("MIME-Version", "1.0") + header("Content-Type", ctype)
    sig_part = (
        header("Content-Type", 'application/pkcs7-signature; name="smime.p7s"')
        + header("Content-Transfer-Encoding", "base64")
        + header("Content-Disposition", 'attachment; filename="smime.p7s"')
        + header("Content-Description", "S/MIME Cryptographic Signature")
        + CRLF + base64_body(signature_der)
    )
    delim = b"--" + boundary.encode("ascii")
    # The CRLF before each delimiter belongs to the delimiter (RFC 2046 §5.1.1), so the
    # first part is exactly ``entity`` as signed.
    return (head + CRLF + PREAMBLE + delim + CRLF + entity + CRLF + delim + CRLF + sig_part
            + CRLF + delim + b"--" + CRLF)


def seal_entity(entity: bytes, signer: Signer, outer_headers: Sequence[bytes]) -> bytes:
    """Sign any CRLF MIME entity (a document, a receipt) and return the whole message."""
    if not entity.endswith(CRLF):
        entity += CRLF
    return assemble_signed(outer_headers, entity, sign_detached(entity, signer))


@dataclass(frozen=True)
class PreparedDocument:
    """A document ready to sign: the server signs ``entity`` in an executor, then calls
    :meth:`finish` with the signature."""

    outer_headers: tuple[bytes, ...]
    entity: bytes = field(repr=False)
    envelope: Envelope

    def finish(self, signature_der: bytes) -> bytes:
        return assemble_signed(self.outer_headers, self.entity, signature_der)


def prepare_document(meta: DocumentMeta, note: str, attachments: list[Attachment], *,
                     from_addr: str, to_addrs: Sequence[str], now: datetime,
                     domain: str, message_id: str | None = None) -> PreparedDocument:
    """Build the document entity and outer headers (cheap; no signing yet)."""
    env = Envelope(from_addr=from_addr, to_addrs=tuple(to_addrs), date=now,
                   message_id=message_id or Envelope.make_message_id(domain))
    entity = build_document_entity(meta, env, note, attachments)
    return PreparedDocument(tuple(document_headers(meta, env)), entity, env)


@dataclass(frozen=True)
class SealedDocument:
    prepared: PreparedDocument
    raw: bytes = field(repr=False)  # the whole multipart/signed message
    digest: bytes  # SHA-256 of the signed entity (what receipts refer to)


def seal_prepared(meta: DocumentMeta, note: str, attachments: list[Attachment],
                  signer: Signer, *, from_addr: str, to_addrs: Sequence[str], now: datetime,
                  domain: str, message_id: str | None = None) -> SealedDocument:
    """Build, sign and wrap a document in one blocking call: one executor job per
    document, whatever the number of receiving units (each attachment is base64-encoded
    once, the entity hashed for the receipt digest here, off the event loop)."""
    prepared = prepare_document(meta, note, attachments, from_addr=from_addr,
                                to_addrs=to_addrs, now=now, domain=domain,
                                message_id=message_id)
    raw = prepared.finish(sign_detached(prepared.entity, signer))
    return SealedDocument(prepared, raw, hashlib.sha256(prepared.entity).digest())


def seal_document(meta: DocumentMeta, note: str, attachments: list[Attachment],
                  signer: Signer, *, from_addr: str, to_addrs: Sequence[str], now: datetime,
                  domain: str, message_id: str | None = None) -> bytes:
    """Build and seal a document in one blocking call (tests, CLI, executor jobs)."""
    prepared = prepare_document(meta, note, attachments, from_addr=from_addr,
                                to_addrs=to_addrs, now=now, domain=domain,
                                message_id=message_id)
    return prepared.finish(sign_detached(prepared.entity, signer))
