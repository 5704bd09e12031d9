"""Facts about official documents, fired on the event bus (``services.bus``).

The XMPP side subscribes (``bus.on("document/arrived", ...)``) to tell a unit's online
clerks; neither package imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

ARRIVED = "document/arrived"
HELD = "document/held"
SIGNED = "document/signed"


@dataclass(frozen=True)
class DocumentArrived:
    """A sealed document was verified and put in the clerks' INBOXes of ``unit``."""

    document: int  # our tracking id (`cxgw doc status ID`)
    doc_id: str
    unit: str
    clerks: tuple[str, ...]
    title: str
    number: str
    from_unit: str
    urgency: str
    signer: str | None


@dataclass(frozen=True)
class DocumentHeld:
    """A document for ``unit`` failed verification and is held (never delivered as trusted)."""

    document: int
    unit: str
    title: str
    from_unit: str
    reason: str
    text: str


@dataclass(frozen=True)
class DocumentSigned:
    """``unit`` signed for a document (its sealed receipt verified)."""

    document: int
    unit: str
    from_unit: str
    title: str
    by: str


REVOKED = "document/revoked-after-delivery"


@dataclass(frozen=True)
class DocumentRevokedAfterDelivery:
    """A document delivered as trusted to ``unit`` was sealed with a key later revoked for
    key compromise: it is no longer trusted, and ``clerks`` are told (issue #11 item 6)."""

    document: int
    unit: str
    clerks: tuple[str, ...]
    title: str
    number: str
    from_unit: str
    serial: str
