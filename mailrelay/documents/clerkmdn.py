"""Read receipts (RFC 8098 MDNs) that clerks' mail clients send for a document.

Every document asks for one (``Disposition-Notification-To``, the sending unit's
document inbox). Thunderbird, Outlook and Foxmail answer it with an unsigned
multipart/report; when an authenticated clerk of a receiving unit sends it, the server
seals a receipt with that unit's seal on the clerk's behalf (see
:meth:`mailrelay.documents.inbound.Inbound._clerk_mdn`). Pure parsing here.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailrelay.documents.mimeparts import (
    CRLF,
    normalize_crlf,
    read_headers,
    split_entity,
    split_multipart,
)

MAX_PARTS = 8


def is_mdn(raw: bytes) -> bool:
    """RFC 8098 §3: a multipart/report with report-type=disposition-notification."""
    head = split_entity(normalize_crlf(raw[:16384]))[0]
    msg = read_headers(head)
    return (msg.get_content_type() == "multipart/report"
            and str(msg.get_param("report-type") or "").lower() == "disposition-notification")


@dataclass(frozen=True)
class ReadReceipt:
    original_message_id: str
    disposition: str
    final_recipient: str

    @property
    def displayed(self) -> bool:
        # RFC 8098 §3.2.6: disposition-type "displayed" (not "deleted", not "denied").
        return self.disposition.rsplit(";", 1)[-1].strip().lower().startswith("displayed")


def read_receipt_request(raw: bytes) -> ReadReceipt:
    """The fields of the message/disposition-notification part (ValueError if absent)."""
    head, body = split_entity(normalize_crlf(raw))
    boundary = read_headers(head).get_param("boundary")
    if not isinstance(boundary, str):
        raise ValueError("multipart/report without boundary")
    for part in split_multipart(body, boundary)[:MAX_PARTS]:
        part_head, part_body = split_entity(part)
        ctype = read_headers(part_head).get_content_type()
        if ctype != "message/disposition-notification":
            continue
        fields = read_headers(part_body.strip(b"\r\n") + CRLF)
        original = fields.get("Original-Message-ID")  # RFC 8098 §3.2.5
        disposition = fields.get("Disposition")  # §3.2.6, required
        if original is None or disposition is None:
            raise ValueError("the notification has no Original-Message-ID or Disposition")
        return ReadReceipt(" ".join(str(original).split()), " ".join(str(disposition).split()),
                           " ".join(str(fields.get("Final-Recipient", "")).split()))
    raise ValueError("no message/disposition-notification part")
