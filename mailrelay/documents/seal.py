"""Seal official documents: S/MIME multipart/signed (RFC 8551 §3.5) with a unit's seal.

The only CPU-heavy step is :func:`sign_detached`, a plain function the server runs in an
executor. Everything around it is cheap byte assembly. The entity is signed once and then
copied verbatim into the message: nothing re-folds or re-encodes it afterwards.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

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


def sign_detached(content: bytes, signer: Signer) -> bytes:
    """DER CMS SignedData (RFC 5652) over ``content`` exactly as given, without the content.

    Signed attributes are contentType, signingTime, messageDigest and smimeCapabilities
    (RFC 8551 §2.5). Plain and blocking: run it in an executor.
    """
    padding_: padding.PSS | padding.PKCS1v15 | None = None
    if signer.rsa_pss and isinstance(signer.key, rsa.RSAPrivateKey):
        padding_ = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content).add_signer(
        signer.certificate, signer.key, hashes.SHA256(), rsa_padding=padding_)
    options = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    if signer.include_certificates:
        # add_certificate must follow add_signer, or cryptography drops it.
        for ca_cert in signer.chain:
            builder = builder.add_certificate(ca_cert)
    else:
        options.append(pkcs7.PKCS7Options.NoCerts)
    return builder.sign(serialization.Encoding.DER, options)


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
