"""Verify a sealed document on arrival: S/MIME signature, certificate path, usage,
validity, revocation and sender (RFC 8551 §3.5, RFC 5652 §5.6, RFC 5280 §6).

:func:`verify_message` never raises for a bad message: it returns a :class:`Verdict`
whose ``reason`` says why it is not trusted. It is CPU-bound: run it in an executor.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .chain import (
    PathResult,
    TrustAnchors,
    VerifyCache,
    build_path,
    certificate_emails,
    check_seal_usage,
    der_of,
)
from .cms import (
    CmsError,
    SignedData,
    check_digest,
    check_signature,
    check_signing_certificate,
    find_signer_certificate,
    load_certificate,
    parse_signed_data,
)
from .mimeparts import (
    fields,
    normalize_crlf,
    parse_address,
    split_entity,
    split_head,
    split_multipart,
)
from .revocation import NOT_ISSUED, RevocationCheck, RevocationState

SIGNATURE_TYPES = ("application/pkcs7-signature", "application/x-pkcs7-signature")
OPAQUE_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")
MIN_RSA_BITS = 2048  # issue #11: minimum RSA 2048 / P-256
MIN_EC_BITS = 256

REASONS = {
    "ok": "the seal is valid",
    "not-signed": "the message carries no S/MIME seal",
    "malformed": "the seal cannot be read",
    "bad-digest": "the document was changed after it was sealed",
    "bad-signature": "the seal's signature is not valid",
    "weak-algorithm": "the seal uses an algorithm we do not accept",
    "no-signer-cert": "the seal's certificate is missing",
    "untrusted-issuer": "the seal was not issued by a trusted CA",
    "bad-certificate": "the seal's certificate is not acceptable",
    "expired": "the seal's certificate has expired",
    "not-yet-valid": "the seal's certificate is not yet valid",
    "revoked": "the seal's certificate has been revoked",
    "revocation-unknown": "the seal's revocation status cannot be established",
    "bad-key-usage": "the certificate may not be used for seals",
    "no-email-protection": "the certificate is not for e-mail protection",
    "sender-mismatch": "the seal does not belong to the sender",
    "weak-key": "the seal's key is too weak (RSA below 2048 bits or EC below P-256)",
    "not-issued-by-us": "the certificate was never issued by the city CA",
}

# Answers "is this the very certificate our CA issued?" for a signer (by bytes), or None
# when the certificate is not from our CA at all (a foreign CA the anchors trust).
IssuedCheck = Callable[[x509.Certificate, x509.Certificate], bool | None]


@dataclass(frozen=True)
class Verdict:
    """The answer for one message. ``trusted`` is True only when ``reason == "ok"``."""

    trusted: bool
    reason: str
    text: str
    signer_subject: str | None = None
    signer_serial: int | None = None
    signer_email: str | None = None  # first rfc822Name of the signer certificate
    signing_time: datetime | None = None  # claimed by the signer (no timestamp authority)
    digest: bytes | None = None  # digest of the signed content (for receipts)
    digest_algorithm: str | None = None
    signer_certificate: x509.Certificate | None = field(default=None, repr=False)
    content: bytes | None = field(default=None, repr=False)  # the signed entity, exact
    revocation_source: str | None = None

    @property
    def signer_emails(self) -> list[str]:
        return certificate_emails(self.signer_certificate) if self.signer_certificate else []


def _fail(reason: str, text: str | None = None, **kw: object) -> Verdict:
    return Verdict(False, reason, text or REASONS.get(reason, reason), **kw)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SignedParts:
    """Where the seal is: the signed content (exact bytes) and the CMS DER."""

    content: bytes
    signature_der: bytes
    headers_block: bytes  # header block of the entity that held the seal
    opaque: bool = False
    signature_part: bytes = b""  # the second body part exactly (multipart/signed only)
    boundary: str = ""


def find_signed(raw: bytes, *, canonical: bool = False) -> SignedParts | None:
    """Locate the seal of a message: only at the top level (fail closed, issue #11).

    A top-level multipart/signed with a *detached* signature over its first part, or a
    top-level opaque application/pkcs7-mime signed-data. Signatures nested inside other
    MIME (a multipart/mixed wrapper) are not looked for: what is outside a signature is
    never delivered under a trusted stamp. Raises ValueError for broken MIME.
    ``canonical``: ``raw`` is already CRLF (the caller ran :func:`normalize_crlf`).
    """
    entity = raw if canonical else normalize_crlf(raw)
    head, begin = split_head(entity)
    msg = fields(head)
    ctype = msg.get_content_type()
    if ctype == "multipart/signed":
        boundary = msg.get_param("boundary")
        if not isinstance(boundary, str):
            raise ValueError("multipart/signed without boundary")
        parts = split_multipart(entity, boundary, begin)
        # RFC 1847 §2.1: exactly two body parts, content then signature.
        if len(parts) != 2:
            raise ValueError(f"multipart/signed with {len(parts)} parts")
        sig_head, sig_body = split_entity(parts[1])
        sig_type = fields(sig_head).get_content_type()
        if sig_type not in SIGNATURE_TYPES:
            raise ValueError(f"multipart/signed with a {sig_type} signature")
        return SignedParts(parts[0], _decode_b64(sig_body), head,
                           signature_part=parts[1], boundary=boundary)
    if ctype in OPAQUE_TYPES:
        smime_type = str(msg.get_param("smime-type") or "signed-data").lower()
        if smime_type != "signed-data":
            return None
        return SignedParts(b"", _decode_b64(entity[begin:]), head, opaque=True)
    return None


def _decode_b64(body: bytes) -> bytes:
    try:
        return base64.b64decode(b"".join(body.split()), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"signature part is not base64: {exc}") from exc


@functools.lru_cache(maxsize=1024)
def _signer_fields_of(cert: x509.Certificate) -> tuple[tuple[str, object], ...]:
    emails = certificate_emails(cert)
    return tuple({
        "signer_subject": cert.subject.rfc4514_string(),
        "signer_serial": cert.serial_number,
        "signer_email": emails[0] if emails else None,
        "signer_certificate": cert,
    }.items())


def _signer_fields(cert: x509.Certificate) -> dict[str, object]:
    """Subject, serial and address of a signer (kept per certificate: immutable)."""
    return dict(_signer_fields_of(cert))


def verify_detached(
    content: bytes,
    signature_der: bytes,
    anchors: TrustAnchors,
    *,
    now: datetime,
    revocation: RevocationCheck | None = None,
    require_revocation: bool = False,
    cache: VerifyCache | None = None,
    sender: str | None = None,
    extra_certs: Sequence[x509.Certificate] = (),
    require_eku: bool = True,
    opaque: bool = False,
    issued: IssuedCheck | None = None,
) -> Verdict:
    """Verify CMS SignedData over ``content`` (exact bytes). ``sender``, when given, must
    be one of the signer certificate's e-mail addresses. ``opaque``: the SignedData
    carries its own content (application/pkcs7-mime); otherwise it must be detached.
    ``issued``: the certificate table of our own CA (see :data:`IssuedCheck`)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    try:
        sd = parse_signed_data(signature_der)
        if opaque:
            if sd.encapsulated is None:
                return _fail("malformed", "opaque signed-data without content")
            content = sd.encapsulated  # opaque signed-data carries its own content
        elif sd.encapsulated is not None:
            # RFC 8551 §3.5.3: the signature of multipart/signed is detached. One that
            # carries content of its own would verify that content, not the visible part
            # (a content swap); OpenSSL's `cms -verify` refuses it too.
            return _fail("malformed", "multipart/signed whose signature encapsulates"
                                      " content of its own")
        signer = find_signer_certificate(sd, extra_certs)
    except CmsError as err:
        return _fail(err.reason, err.text)
    info = _signer_fields(signer)
    try:
        digest, signing_time, attrs = check_digest(sd, content)
        info |= {"signing_time": signing_time, "digest": digest,
                 "digest_algorithm": sd.digest_name}
        # RFC 5652 §5.6: the signature is checked with the signer certificate's key.
        check_signature(sd, content, signer)
        check_signing_certificate(attrs, der_of(signer))
    except CmsError as err:
        return _fail(err.reason, err.text, **info)
    return _check_certificate(sd, signer, content, info, anchors, now=now,
                              revocation=revocation, require_revocation=require_revocation,
                              cache=cache, sender=sender, extra_certs=extra_certs,
                              require_eku=require_eku, issued=issued)


@functools.lru_cache(maxsize=1024)
def key_strength(cert: x509.Certificate) -> str | None:
    """Why the certificate's key is too weak, or None (RSA >= 2048, EC >= P-256); kept
    per certificate (a fact of its bytes)."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            return f"RSA key of {key.key_size} bits (at least {MIN_RSA_BITS})"
        return None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.key_size < MIN_EC_BITS:
            return f"EC key on {key.curve.name} (at least P-256)"
        return None
    return f"unsupported key type {type(key).__name__}"


def _check_certificate(sd: SignedData, signer: x509.Certificate, content: bytes,
                       info: dict[str, object], anchors: TrustAnchors, *, now: datetime,
                       revocation: RevocationCheck | None, require_revocation: bool,
                       cache: VerifyCache | None, sender: str | None,
                       extra_certs: Sequence[x509.Certificate],
                       require_eku: bool, issued: IssuedCheck | None = None) -> Verdict:
    intermediates = [load_certificate(der) for der in sd.certificates]
    intermediates += extra_certs
    path: PathResult = (cache.path(signer, intermediates, anchors) if cache is not None
                        else build_path(signer, intermediates, anchors))
    reason, text = path.at(now)
    if reason != "ok":
        return _fail(reason, text, **info)
    reason, text = check_seal_usage(signer, require_eku=require_eku)
    if reason != "ok":
        return _fail(reason, text, **info)
    for cert in path.path[:-1]:
        weak = key_strength(cert)
        if weak is not None:
            return _fail("weak-key", f"{REASONS['weak-key']}: {weak}", **info)
    if issued is not None and len(path.path) >= 2 and \
            issued(path.path[0], path.path[1]) is False:
        # Issue #11: chaining to our CA is not enough; the certificate must be the one
        # in our certificate table (a key compromise of the CA, a rogue issuance).
        return _fail("not-issued-by-us", None, **info)
    source = None
    if revocation is not None:
        # RFC 5280 §6.3: every certificate below the trust anchor is checked.
        for cert, issuer in zip(path.path, path.path[1:], strict=False):
            status = revocation(cert, issuer, now)
            source = status.source
            if status.state is RevocationState.REVOKED:
                when = status.revoked_at.isoformat() if status.revoked_at else "unknown"
                return _fail("revoked", f"certificate {cert.subject.rfc4514_string()} was "
                                        f"revoked at {when} ({status.reason}; "
                                        f"source {status.source})",
                             revocation_source=status.source, **info)
            if status.state is RevocationState.UNKNOWN and status.detail == NOT_ISSUED:
                return _fail("not-issued-by-us", None, revocation_source=status.source,
                             **info)
            if status.state is RevocationState.UNKNOWN and require_revocation:
                return _fail("revocation-unknown",
                             f"revocation status unknown: {status.detail}",
                             revocation_source=status.source, **info)
    if sender is not None:
        _, addr = parse_address(sender)
        if addr.lower() not in certificate_emails(signer):
            return _fail("sender-mismatch", f"sealed by {info['signer_email']}, "
                                            f"sent as {addr}", revocation_source=source,
                         **info)
    return Verdict(True, "ok", REASONS["ok"], content=content,
                   revocation_source=source, **info)  # type: ignore[arg-type]


def verify_message(
    raw: bytes,
    anchors: TrustAnchors,
    *,
    now: datetime,
    revocation: RevocationCheck | None = None,
    require_revocation: bool = False,
    cache: VerifyCache | None = None,
    check_sender: bool = True,
    expected_sender: str | None = None,
    extra_certs: Sequence[x509.Certificate] = (),
    require_eku: bool = True,
    issued: IssuedCheck | None = None,
    canonical: bool = False,
    found: SignedParts | None = None,
) -> Verdict:
    """Verify a sealed message given as raw bytes (CRLF or LF line endings).

    With ``check_sender`` the From field of the entity holding the seal must be an
    address of the signer certificate; ``expected_sender`` overrides that address.
    ``canonical``: ``raw`` is already CRLF (skips a scan of the whole message);
    ``found``: what :func:`find_signed` returned for ``raw`` (the caller split it once).
    """
    if found is None:
        try:
            found = find_signed(raw, canonical=canonical)
        except (ValueError, UnicodeError) as exc:
            return _fail("malformed", f"cannot read the MIME structure: {exc}")
    if found is None:
        return _fail("not-signed")
    sender = expected_sender
    if sender is None and check_sender:
        sender = fields(found.headers_block).get("From")
        if sender is None:
            return _fail("sender-mismatch", "the message has no From field")
        sender = str(sender)
    return verify_detached(found.content, found.signature_der, anchors, now=now,
                           revocation=revocation, require_revocation=require_revocation,
                           cache=cache, sender=sender, extra_certs=extra_certs,
                           require_eku=require_eku, opaque=found.opaque, issued=issued)


def clear_caches() -> None:
    """Forget everything kept per certificate or algorithm (a cold start, for benchmarks
    and tests): parsed certificates and their facts. Never needed for correctness: what
    is kept is a function of the exact bytes; trust (path, revocation) is not kept here."""
    from . import cms, mimeparts
    from .chain import clear_caches as clear_chain
    clear_chain()
    mimeparts.clear_address_caches()
    for fn in (cms.load_certificate, cms.issuer_of, cms._key_identifier,
               cms._signature_algorithm, cms._digest_name, cms._content_type_name,
               cms._ess_cert_id, _signer_fields_of, key_strength):
        fn.cache_clear()
