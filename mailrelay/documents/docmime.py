"""The MIME form of an official document (公文), before and after sealing.

A document is a multipart/mixed entity: a text/plain note, ``cx-document.json`` with the
metadata, and the attachments. The document headers (From, To, Subject, X-CX-Doc-*) are
written twice: on the outer message for routing and indexing, and inside the signed
entity ("protected headers") so that the seal covers them too.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from enum import StrEnum

from .mimeparts import (
    CRLF,
    base64_body,
    header,
    mailbox,
    new_boundary,
    rfc2231_param,
    text_header,
)

METADATA_FILENAME = "cx-document.json"
METADATA_VERSION = 1


class Urgency(StrEnum):
    NORMAL = "normal"
    URGENT = "urgent"  # 加急
    EXTRA_URGENT = "extra-urgent"  # 特急


class Classification(StrEnum):
    PUBLIC = "public"  # 公开
    INTERNAL = "internal"  # 内部 (classified material never travels on this network)


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes = field(repr=False)
    content_type: str = "application/octet-stream"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class DocumentMeta:
    """What identifies an official document; carried in headers and in cx-document.json."""

    doc_id: str
    number: str  # 文号, e.g. 城政发〔2026〕12号
    title: str
    from_unit: str  # unit code
    to_units: tuple[str, ...]
    urgency: Urgency = Urgency.NORMAL
    classification: Classification = Classification.INTERNAL
    from_unit_name: str | None = None

    @staticmethod
    def new_id() -> str:
        return str(uuid.uuid4())


@dataclass(frozen=True)
class Envelope:
    """Addressing of one sealed message (outer headers)."""

    from_addr: str
    to_addrs: tuple[str, ...]
    date: datetime
    message_id: str  # with angle brackets

    @staticmethod
    def make_message_id(domain: str) -> str:
        return f"<{uuid.uuid4()}@{domain}>"


def document_headers(meta: DocumentMeta, env: Envelope) -> list[bytes]:
    """The header fields of a document, shared by the outer message and the signed entity."""
    return [
        header("From", mailbox(env.from_addr, meta.from_unit_name)),
        header("To", ", ".join(mailbox(a) for a in env.to_addrs)),
        text_header("Subject", meta.title),
        header("Date", email.utils.format_datetime(env.date)),  # RFC 5322 §3.3
        header("Message-ID", env.message_id),
        # RFC 8098 §2.1: the sender asks for a receipt (our signed MDN) at its inbox.
        header("Disposition-Notification-To", env.from_addr),
        header("X-CX-Doc-Id", meta.doc_id),
        text_header("X-CX-Doc-Number", meta.number),  # RFC 2047 for 文号
        header("X-CX-Doc-Urgency", meta.urgency.value),
        header("X-CX-Doc-Classification", meta.classification.value),
        header("X-CX-Doc-From-Unit", meta.from_unit),
        header("X-CX-Doc-To-Units", ", ".join(meta.to_units)),
    ]


def metadata_json(meta: DocumentMeta, env: Envelope, attachments: list[Attachment]) -> bytes:
    doc = {
        "version": METADATA_VERSION,
        "doc_id": meta.doc_id,
        "number": meta.number,
        "title": meta.title,
        "from_unit": meta.from_unit,
        "from_unit_name": meta.from_unit_name,
        "to_units": list(meta.to_units),
        "urgency": meta.urgency.value,
        "classification": meta.classification.value,
        "date": env.date.isoformat(),
        "message_id": env.message_id,
        "attachments": [
            {"filename": a.filename, "content_type": a.content_type,
             "size": len(a.content), "sha256": a.sha256}
            for a in attachments
        ],
    }
    return json.dumps(doc, ensure_ascii=False, sort_keys=True, indent=1).encode("utf-8")


def _leaf(content_type: str, data: bytes, *, filename: str | None = None,
          inline: bool = False) -> bytes:
    # RFC 8551 §3.1.2: signed data must survive 7-bit transport unchanged, so every
    # leaf is base64 (no trailing white space, no long lines for relays to mangle).
    ctype = content_type
    if filename:
        ctype += "; " + rfc2231_param("name", filename)
    lines = [header("Content-Type", ctype), header("Content-Transfer-Encoding", "base64")]
    if filename:
        disposition = "inline" if inline else "attachment"
        lines.append(header("Content-Disposition",
                            f"{disposition}; {rfc2231_param('filename', filename)}"))
    return b"".join(lines) + CRLF + base64_body(data)


def build_document_entity(meta: DocumentMeta, env: Envelope, note: str,
                          attachments: list[Attachment], *, boundary: str | None = None) -> bytes:
    """The multipart/mixed entity that gets sealed, CRLF, byte-exact."""
    boundary = boundary or new_boundary()
    parts = [
        _leaf("text/plain; charset=utf-8", note.replace("\r\n", "\n").replace("\n", "\r\n")
              .encode("utf-8")),
        _leaf("application/json; charset=utf-8", metadata_json(meta, env, attachments),
              filename=METADATA_FILENAME),
    ]
    parts += [_leaf(a.content_type, a.content, filename=a.filename) for a in attachments]
    head = header("Content-Type",
                  f'multipart/mixed; boundary="{boundary}"; protected-headers="v1"')
    head += header("MIME-Version", "1.0") + b"".join(document_headers(meta, env))
    delim = b"--" + boundary.encode("ascii")
    body = b"".join(delim + CRLF + part + CRLF for part in parts) + delim + b"--" + CRLF
    return head + CRLF + body


@dataclass(frozen=True)
class ParsedDocument:
    """A document read back from a (verified) signed entity."""

    meta: DocumentMeta
    note: str
    attachments: list[Attachment]
    metadata: dict[str, object]


def parse_document(entity: bytes) -> ParsedDocument:
    """Read metadata, note and attachments from the signed entity (ValueError if not ours)."""
    msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(entity)
    assert isinstance(msg, EmailMessage)
    if msg.get_content_type() != "multipart/mixed":
        raise ValueError("not a cx document: expected multipart/mixed")
    note = ""
    metadata: dict[str, object] | None = None
    attachments: list[Attachment] = []
    for part in msg.iter_parts():
        assert isinstance(part, EmailMessage)
        filename = part.get_filename()
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if filename == METADATA_FILENAME and metadata is None:
            metadata = json.loads(data.decode("utf-8"))
        elif filename:
            attachments.append(Attachment(filename, data, part.get_content_type()))
        elif part.get_content_type() == "text/plain" and not note:
            note = data.decode(part.get_content_charset() or "utf-8").replace("\r\n", "\n")
    if not isinstance(metadata, dict) or metadata.get("version") != METADATA_VERSION:
        raise ValueError(f"not a cx document: {METADATA_FILENAME} missing or unknown version")
    meta = DocumentMeta(
        doc_id=str(metadata["doc_id"]),
        number=str(metadata["number"]),
        title=str(metadata["title"]),
        from_unit=str(metadata["from_unit"]),
        to_units=tuple(str(u) for u in metadata["to_units"]),  # type: ignore[attr-defined]
        urgency=Urgency(str(metadata["urgency"])),
        classification=Classification(str(metadata["classification"])),
        from_unit_name=(str(metadata["from_unit_name"])
                        if metadata.get("from_unit_name") else None),
    )
    return ParsedDocument(meta, note, attachments, metadata)


def outer_matches_signed(outer_headers: EmailMessage, meta: DocumentMeta) -> list[str]:
    """Names of outer X-CX-Doc-* headers that disagree with the signed metadata."""
    expected = {
        "X-CX-Doc-Id": meta.doc_id,
        "X-CX-Doc-Number": meta.number,
        "X-CX-Doc-From-Unit": meta.from_unit,
        "X-CX-Doc-Urgency": meta.urgency.value,
        "X-CX-Doc-Classification": meta.classification.value,
        "Subject": meta.title,
    }
    bad = []
    for name, value in expected.items():
        got = outer_headers.get(name)
        if got is not None and " ".join(str(got).split()) != " ".join(value.split()):
            bad.append(name)
    return bad
