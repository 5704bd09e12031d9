"""Tables of official documents that keep message bodies alive (see `mailrelay.bodies`):
the sealed document, each delivered copy and receipt, and tracking events."""

from __future__ import annotations

from mailrelay.bodies import BodyRef

DOCUMENT_BODY_REFS = (
    BodyRef("documents", "message_id"),
    BodyRef("document_recipients", "delivered_message_id"),
    BodyRef("document_recipients", "receipt_message_id"),
    BodyRef("document_events", "message_id"),
)
