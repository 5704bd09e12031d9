"""What a document inbox delivers: the one entry point that decides (issue #11 item 1).

Pure and blocking (run it in the executor). A message is examined once:

* only a top-level multipart/signed with a detached signature over its first part, or a
  top-level opaque pkcs7-mime signed-data, is ever trusted (:func:`verify.find_signed`);
* the copy a clerk receives is rebuilt from verified bytes only: the signed entity and
  its signature, under header fields taken from the signed entity (the "protected
  headers" every cx document carries) or, for signed mail that has none, the few outer
  fields whose values are checked (From) or shown as they are (Subject, Date); a
  preamble, an epilogue, Reply-To, Sender and anything outside the signature are
  dropped (RFC 8551 §3.5.3: the first body part is exactly what was signed);
* the outer From must be one field with one mailbox, the signer's address, and a
  display name that does not spell an address (issue #11 item 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mailrelay.documents.chain import TrustAnchors, VerifyCache
from mailrelay.documents.docmime import DocumentMeta
from mailrelay.documents.fastmeta import decoded, mismatches, outer_fields, read_meta
from mailrelay.documents.mimeparts import (
    CRLF,
    fields,
    header,
    header_block,
    mailboxes,
    normalize_crlf,
    parse_address,
    split_entity,
    split_multipart,
    text_header,
)
from mailrelay.documents.revocation import RevocationCheck
from mailrelay.documents.verify import (
    IssuedCheck,
    SignedParts,
    Verdict,
    find_signed,
    verify_message,
)

# Header fields of the signed entity shown to the clerk (the protected headers).
PROTECTED = ("From", "To", "Cc", "Subject", "Date", "Message-ID",
             "Disposition-Notification-To", "X-CX-Doc-Id", "X-CX-Doc-Number",
             "X-CX-Doc-Urgency", "X-CX-Doc-Classification", "X-CX-Doc-From-Unit",
             "X-CX-Doc-To-Units")
# Outer fields kept on signed mail without protected headers (From is checked against
# the signer; the others are ordinary mail fields, shown under a "signed" stamp only).
OUTER_KEPT = ("From", "To", "Cc", "Subject", "Date", "Message-ID", "In-Reply-To",
              "References", "Disposition-Notification-To")
RECEIPT_KEPT = OUTER_KEPT + ("X-CX-Doc-Id", "X-CX-Doc-Receipt", "Auto-Submitted")
STRUCTURE = ("MIME-Version", "Content-Type", "Content-Transfer-Encoding",
             "Content-Disposition")


@dataclass(frozen=True)
class Examined:
    """A message read and verified once."""

    verdict: Verdict
    outer: dict[str, str]
    meta: DocumentMeta | None  # the signed metadata, when the seal is trusted and ours
    mismatches: tuple[str, ...]  # outer fields that disagree with signed content
    delivered: bytes | None  # the copy a clerk may get (without our verdict field)
    message_id: str = ""  # the signed Message-ID (the outer one for signed mail)

    @property
    def is_document(self) -> bool:
        return self.verdict.trusted and self.meta is not None


def header_fields(head: bytes) -> list[tuple[str, bytes]]:
    """(lower-case name, exact field bytes with CRLF) of a header block, folding kept."""
    fields: list[tuple[str, bytes]] = []
    for line in head.split(CRLF):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + line + CRLF)
            continue
        name = line.split(b":", 1)[0].strip().decode("ascii", "replace").lower()
        fields.append((name, line + CRLF))
    return fields


def pick(head: bytes, names: tuple[str, ...]) -> bytes:
    """The fields of ``head`` named in ``names`` (first of each), in ``names`` order."""
    fields = header_fields(head)
    out = b""
    for want in names:
        for name, value in fields:
            if name == want.lower():
                out += value
                break
    return out


def from_problems(head: bytes, signer_emails: list[str]) -> tuple[str, ...]:
    """Issue #11 item 2: one From field, one mailbox, the signer's, no address in the
    display name (a name that spells another unit's address fools the reader)."""
    msg = fields(head)
    values = msg.get_all("From") or []
    if len(values) != 1:
        return ("From (not exactly one field)",)
    found = mailboxes(str(values[0]))
    if len(found) != 1:
        return ("From (not exactly one mailbox)",)
    name, addr = found[0]
    problems: list[str] = []
    if addr.lower() not in signer_emails:
        problems.append("From (not the signer's address)")
    if "@" in decoded(name):
        problems.append("From (display name spells an address)")
    return tuple(problems)


def signed_copy(raw: bytes, found: SignedParts, *, receipt: bool = False,
                canonical: bool = False) -> bytes:
    """The message rebuilt from the signature and what it covers, nothing else."""
    raw = raw if canonical else normalize_crlf(raw)
    head = header_block(raw)
    if found.opaque:
        body = split_entity(raw)[1]
        kept = RECEIPT_KEPT if receipt else OUTER_KEPT
        return pick(head, kept) + pick(head, STRUCTURE) + CRLF + body
    boundary = found.boundary
    content, signature = found.content, found.signature_part
    if not boundary:  # a SignedParts made elsewhere: split again
        b = fields(head).get_param("boundary")
        assert isinstance(b, str)
        boundary = b
        content, signature = split_multipart(split_entity(raw)[1], boundary)
    inner = header_block(content)
    protected = pick(inner, PROTECTED) if not receipt else b""
    if b"\nfrom:" not in b"\n" + protected.lower():
        protected = pick(head, RECEIPT_KEPT if receipt else OUTER_KEPT)
    delim = b"--" + boundary.encode("ascii")
    # RFC 2046 §5.1.1: the CRLF before each delimiter belongs to it; no preamble and
    # no epilogue (text outside the signature that some clients would show).
    return b"".join((protected, pick(head, ("MIME-Version", "Content-Type")), CRLF,
                     delim, CRLF, content, CRLF, delim, CRLF, signature, CRLF,
                     delim, b"--", CRLF))


def examine(raw: bytes, anchors: TrustAnchors, now: datetime,
            revocation: RevocationCheck | None, cache: VerifyCache,
            issued: IssuedCheck | None = None) -> Examined:
    """Verify the seal and read the document."""
    raw = normalize_crlf(raw)
    found: SignedParts | None = None
    try:
        found = find_signed(raw, canonical=True)
    except (ValueError, UnicodeError):
        found = None  # verify_message splits again and says why it is malformed
    verdict = verify_message(raw, anchors, now=now, revocation=revocation, cache=cache,
                             issued=issued, canonical=True, found=found)
    outer, _ = outer_fields(raw)
    if not verdict.trusted or verdict.content is None:
        return Examined(verdict, outer, None, (), None, outer["Message-ID"])
    head = header_block(raw)
    meta = None
    try:
        meta = read_meta(verdict.content)
    except (ValueError, KeyError, TypeError, UnicodeError):
        meta = None
    assert found is not None
    problems = from_problems(head, verdict.signer_emails)
    inner = fields(header_block(verdict.content))
    message_id = " ".join(str(inner.get("Message-ID") or outer["Message-ID"]).split())
    if meta is not None:
        problems += mismatches(outer, meta)
        inner_from = inner.get("From")
        if inner_from is not None:
            _, inner_addr = parse_address(str(inner_from))
            if inner_addr.lower() not in verdict.signer_emails:
                problems += ("From (signed From is not the signer)",)
    return Examined(verdict, outer, meta, problems, signed_copy(raw, found, canonical=True),
                    message_id)


VERDICT_FIELD = "X-CX-Seal-Verdict"
WARNING_FIELD = "X-CX-Doc-Warning"


def verdict_value(kind: str, document: int | None, v: Verdict) -> str:
    serial = f"{v.signer_serial:x}" if v.signer_serial is not None else "-"
    doc = f" doc={document};" if document is not None else ""
    return (f"{kind};{doc} signer={v.signer_email or '-'}; serial={serial};"
            f" revocation={v.revocation_source or 'none'}")


def stamp(copy: bytes, value: str, warning: str | None = None) -> bytes:
    """Our verdict field (and a warning) over a copy rebuilt from verified bytes."""
    out = header(VERDICT_FIELD, value)
    if warning:
        out += text_header(WARNING_FIELD, warning)
    return out + copy


def is_receipt(raw: bytes) -> bool:
    head = split_entity(raw[:16384])[0].lower()
    return b"\nx-cx-doc-receipt:" in head


def unit_of(address: str) -> str:
    local = address.lower().rpartition("@")[0]
    return local.removesuffix(".docs")
