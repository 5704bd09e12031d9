"""Signed receipts for official documents: a sealed MDN (RFC 8098).

The receiving unit answers a verified document with a multipart/report
(report-type=disposition-notification) that names the original Message-ID and the
digest of the sealed content, and seals it with its own seal. The sender verifies
the receipt with :func:`verify_receipt`, which also checks it answers the right message.
"""

from __future__ import annotations

import email.utils
import hmac
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from .chain import TrustAnchors, VerifyCache
from .mimeparts import (
    CRLF,
    base64_body,
    header,
    mailbox,
    new_boundary,
    read_headers,
    split_entity,
    split_multipart,
    text_header,
)
from .revocation import RevocationCheck
from .seal import Signer, seal_entity
from .verify import IssuedCheck, Verdict, verify_message

REPORTING_UA = "cx-gateway; cx-gateway official documents"
DISPOSITION = "manual-action/MDN-sent-manually; displayed"
DIGEST_FIELD = "X-CX-Original-Digest"


@dataclass(frozen=True)
class ReceiptRequest:
    """What the receiver knows about the document it signs for (from its Verdict)."""

    original_message_id: str
    original_sender: str  # the sending unit's document inbox
    doc_id: str
    title: str
    number: str
    digest: bytes  # digest of the sealed content, from Verdict.digest
    digest_algorithm: str = "sha256"


def format_digest(algorithm: str, digest: bytes) -> str:
    name = {"sha256": "sha-256", "sha384": "sha-384", "sha512": "sha-512"}.get(algorithm,
                                                                              algorithm)
    return f"{name}:{digest.hex()}"


def build_mdn_entity(req: ReceiptRequest, *, receiver: str, receiver_unit: str,
                     now: datetime, boundary: str | None = None) -> bytes:
    """The multipart/report entity (RFC 8098 §3; RFC 6522) that gets sealed."""
    boundary = boundary or new_boundary()
    when = email.utils.format_datetime(now)
    text = (f"公文《{req.title}》({req.number}) 已由 {receiver_unit} 于 {when} 签收。\r\n"
            f"The document {req.doc_id} was received and signed for by {receiver}.\r\n")
    human = (header("Content-Type", "text/plain; charset=utf-8")
             + header("Content-Transfer-Encoding", "base64") + CRLF
             + base64_body(text.encode("utf-8")))
    # RFC 8098 §3.1: the second part is message/disposition-notification (7bit fields).
    fields = (
        header("Reporting-UA", REPORTING_UA)  # §3.2.1
        + header("Final-Recipient", f"rfc822;{receiver}")  # §3.2.4, required
        + header("Original-Message-ID", req.original_message_id)  # §3.2.5
        + header("Disposition", DISPOSITION)  # §3.2.6, required
        # §3.3 extension fields: what exactly was received, and which document.
        + header(DIGEST_FIELD, format_digest(req.digest_algorithm, req.digest))
        + header("X-CX-Doc-Id", req.doc_id)
    )
    report = header("Content-Type", "message/disposition-notification") + CRLF + fields
    head = (
        header("Content-Type", f'multipart/report; report-type=disposition-notification; '
                               f'boundary="{boundary}"')
        + header("MIME-Version", "1.0")
    )
    delim = b"--" + boundary.encode("ascii")
    return (head + CRLF + delim + CRLF + human + CRLF + delim + CRLF + report + CRLF
            + delim + b"--" + CRLF)


def receipt_headers(req: ReceiptRequest, *, receiver: str, receiver_name: str | None,
                    now: datetime, domain: str) -> list[bytes]:
    return [
        header("From", mailbox(receiver, receiver_name)),
        header("To", mailbox(req.original_sender)),
        text_header("Subject", f"已签收: {req.title}"),
        header("Date", email.utils.format_datetime(now)),
        header("Message-ID", f"<{uuid.uuid4()}@{domain}>"),
        header("In-Reply-To", req.original_message_id),
        header("References", req.original_message_id),
        header("X-CX-Doc-Id", req.doc_id),
        header("X-CX-Doc-Receipt", "signed"),
        # RFC 3834 §5: keep vacation responders and MDN generators from replying.
        header("Auto-Submitted", "auto-replied"),
    ]


def seal_receipt(req: ReceiptRequest, signer: Signer, *, receiver: str, receiver_unit: str,
                 now: datetime, domain: str, receiver_name: str | None = None) -> bytes:
    """A complete sealed receipt message, CRLF bytes (blocking: signs)."""
    entity = build_mdn_entity(req, receiver=receiver, receiver_unit=receiver_unit, now=now)
    return seal_entity(entity, signer, receipt_headers(req, receiver=receiver,
                                                       receiver_name=receiver_name,
                                                       now=now, domain=domain))


@dataclass(frozen=True)
class Receipt:
    """The fields read from a verified receipt."""

    original_message_id: str
    final_recipient: str
    disposition: str
    digest: str | None
    doc_id: str | None


@dataclass(frozen=True)
class ReceiptVerdict:
    trusted: bool
    reason: str  # a Verdict reason, or "not-a-receipt", "wrong-original", "wrong-digest"
    text: str
    seal: Verdict
    receipt: Receipt | None = None


def parse_mdn(entity: bytes) -> Receipt:
    """Read the disposition-notification fields of a multipart/report (ValueError)."""
    head, body = split_entity(entity)
    msg = read_headers(head)
    if msg.get_content_type() != "multipart/report" or \
            msg.get_param("report-type") != "disposition-notification":
        raise ValueError("not a multipart/report disposition-notification")
    boundary = msg.get_param("boundary")
    if not isinstance(boundary, str):
        raise ValueError("multipart/report without boundary")
    for part in split_multipart(body, boundary):
        part_head, part_body = split_entity(part)
        if read_headers(part_head).get_content_type() == "message/disposition-notification":
            fields = read_headers(part_body.rstrip(b"\r\n") + CRLF)
            original = fields.get("Original-Message-ID")
            disposition = fields.get("Disposition")
            recipient = fields.get("Final-Recipient")
            if original is None or disposition is None or recipient is None:
                raise ValueError("disposition notification lacks required fields")
            digest = fields.get(DIGEST_FIELD)
            doc_id = fields.get("X-CX-Doc-Id")
            return Receipt(str(original).strip(), str(recipient).strip(),
                           " ".join(str(disposition).split()),
                           str(digest).strip() if digest else None,
                           str(doc_id).strip() if doc_id else None)
    raise ValueError("no message/disposition-notification part")


def verify_receipt(raw: bytes, anchors: TrustAnchors, *, now: datetime,
                   original_message_id: str, original_digest: bytes,
                   digest_algorithm: str = "sha256", doc_id: str | None = None,
                   expected_receiver: str | None = None,
                   revocation: RevocationCheck | None = None,
                   cache: VerifyCache | None = None,
                   extra_certs: Sequence[x509.Certificate] = (),
                   issued: IssuedCheck | None = None) -> ReceiptVerdict:
    """Check a receipt's seal and that it signs for *our* message with *our* digest."""
    seal = verify_message(raw, anchors, now=now, revocation=revocation, cache=cache,
                          expected_sender=expected_receiver, extra_certs=extra_certs,
                          issued=issued)
    if not seal.trusted or seal.content is None:
        return ReceiptVerdict(False, seal.reason, seal.text, seal)
    try:
        receipt = parse_mdn(seal.content)
    except (ValueError, UnicodeError) as exc:
        return ReceiptVerdict(False, "not-a-receipt", str(exc), seal)
    if receipt.original_message_id != original_message_id.strip():
        return ReceiptVerdict(False, "wrong-original",
                              f"receipt is for {receipt.original_message_id}", seal, receipt)
    if doc_id is not None and receipt.doc_id != doc_id:
        return ReceiptVerdict(False, "wrong-original", f"receipt is for document "
                                                       f"{receipt.doc_id}", seal, receipt)
    want = format_digest(digest_algorithm, original_digest)
    if receipt.digest is None or not hmac.compare_digest(receipt.digest.lower(), want):
        return ReceiptVerdict(False, "wrong-digest",
                              "receipt was given for different content", seal, receipt)
    if not receipt.disposition.lower().endswith("displayed"):
        return ReceiptVerdict(False, "not-a-receipt",
                              f"disposition is {receipt.disposition}", seal, receipt)
    return ReceiptVerdict(True, "ok", "signed receipt is valid", seal, receipt)
