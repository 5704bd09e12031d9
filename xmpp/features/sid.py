"""Unique and stable stanza ids (XEP-0359). Pure helpers.

The server adds ``<stanza-id xmlns='urn:xmpp:sid:0' by='archive@domain' id='...'/>`` to a
message it archives; the id is the message's id in that archive (MAM before/after ids).
XEP-0359 §3.3: a stanza-id claiming to be by one of our JIDs that we did not add is
removed, so a sender cannot forge ids in someone's archive.
"""

from __future__ import annotations

import secrets
from xml.etree.ElementTree import Element, SubElement

NS = "urn:xmpp:sid:0"
STANZA_ID = f"{{{NS}}}stanza-id"
ORIGIN_ID = f"{{{NS}}}origin-id"


def new_id() -> str:
    """A fresh archive id: 16 random bytes, URL-safe (unguessable, XEP-0359 §4)."""
    return secrets.token_urlsafe(16)


def strip(stanza: Element, by: str) -> None:
    """Remove stanza-ids claiming to be `by` (XEP-0359 §3.3)."""
    for el in stanza.findall(STANZA_ID):
        if el.get("by") == by:
            stanza.remove(el)


def add(stanza: Element, by: str, id_: str) -> None:
    strip(stanza, by)
    SubElement(stanza, STANZA_ID, {"by": by, "id": id_})


def get(stanza: Element, by: str) -> str | None:
    for el in stanza.findall(STANZA_ID):
        if el.get("by") == by:
            return el.get("id")
    return None
