"""Which tables keep a message body (`messages` row) alive.

A body may be deleted only when no table refers to it. Each package declares its own
references beside its schema: the mail store and queue here, official documents in
`mailrelay.documents.bodyrefs`. The storage maintenance (`gateway.maintenance`) and the
IMAP store's on-demand collection build their query from `all_refs()`, so a new table
that points at bodies is added in one place and the collector cannot miss it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BodyRef:
    table: str
    column: str


# The mail store, the queue and the delivery log (`cxgw queue show` prints its headers).
MAIL_BODY_REFS = (
    BodyRef("mailbox_messages", "message_id"),
    BodyRef("queue", "message_id"),
    BodyRef("deliveries", "message_id"),
)


def all_refs() -> tuple[BodyRef, ...]:
    from mailrelay.documents.bodyrefs import DOCUMENT_BODY_REFS
    return MAIL_BODY_REFS + DOCUMENT_BODY_REFS
