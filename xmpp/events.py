"""Payloads of the XMPP extension points on the EventBus that are not about a stanza.

Features meet through these points and never import each other:

- ``roster/subscribers`` ``RosterQuery(owner)`` → list of bare JIDs subscribed to
  `owner`'s presence ('from' or 'both', directory contacts included);
- ``roster/subscriptions`` ``RosterQuery(owner)`` → bare JIDs whose presence `owner`
  receives ('to' or 'both');
- ``roster/subscription`` ``RosterQuery(owner, contact)`` → `owner`'s subscription state
  for `contact` ("none", "to", "from", "both");
- ``presence/share`` ``PresenceShare(from_bare, to_bare, available)`` → send the current
  presence of `from_bare`'s available resources to `to_bare` (or unavailable);
- ``presence/initial`` ``SessionEvent`` → a session sent its initial presence (offline
  messages and pending subscription requests are delivered then);
- ``pep/publish`` ``PepPublish``, ``pep/retract`` / ``pep/items`` ``PepItems``,
  ``pep/changed`` ``PepChanged``: the PEP service (see ``xmpp.features.pep``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.etree.ElementTree import Element


@dataclass(frozen=True, slots=True)
class RosterQuery:
    owner: str
    contact: str = ""


@dataclass(frozen=True, slots=True)
class PresenceShare:
    from_bare: str
    to_bare: str
    available: bool = True


@dataclass(frozen=True, slots=True, eq=False)
class PepPublish:
    owner: str
    node: str
    item_id: str
    item: Element
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PepItems:
    owner: str
    node: str
    item_id: str = ""


@dataclass(frozen=True, slots=True, eq=False)
class PepChanged:
    owner: str
    node: str
    item_id: str
    item: Element | None
