"""Client State Indication (XEP-0352, ``urn:xmpp:csi:0``).

An ``<inactive/>`` client (a phone in a pocket) gets a ``Hold`` on its connection: the
driver offers it every stanza before sending (and before stream management counts it).
Unimportant stanzas wait: available/unavailable presence (only the latest per sender is
kept) and chat states without a body. Anything else (a message with a body, an iq, a
subscription request) first releases what was held, in order, then goes out at once.
``<active/>`` releases everything. The decision is made on the serialised bytes, so
holding costs no parsing.
"""

from __future__ import annotations

import itertools
import re
from typing import Any
from xml.etree.ElementTree import Element

from ..host import Host
from ..proto import ns

NS = ns.CSI
MAX_HELD = 200  # more than this: release all (a client that never comes back to active)
_FROM = re.compile(rb' from="([^"]*)"')
_TYPE = re.compile(rb' type="([^"]*)"')
_SEQ = itertools.count()


def _head(data: bytes) -> bytes:
    end = data.find(b">")
    return data[:end] if end >= 0 else data


class Hold:
    """What an inactive client has not been sent yet."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: dict[object, bytes] = {}

    def offer(self, data: bytes, conn: Any) -> bool:
        """True when `data` is held; otherwise what was held has been sent first."""
        key = self.key(data)
        if key is not None:
            items = self.items
            items.pop(key, None)  # the latest presence of a sender replaces older ones
            items[key] = data
            if len(items) > MAX_HELD:
                self.release(conn)
            return True
        self.release(conn)
        return False

    def key(self, data: bytes) -> object | None:
        """What `data` is held under, or None when it is important."""
        if data.startswith(b"<presence"):
            head = _head(data)
            t = _TYPE.search(head)
            if t is not None and t.group(1) != b"unavailable":
                return None  # subscriptions, probes and errors matter
            f = _FROM.search(head)
            return (b"p", f.group(1) if f else b"")
        if data.startswith(b"<message") and b"<body" not in data \
                and b"http://jabber.org/protocol/chatstates" in data:
            return (b"c", next(_SEQ))  # chat states: each kept, in order
        return None

    def release(self, conn: Any) -> None:
        items, self.items = self.items, {}
        for data in items.values():
            conn.emit(data)


def on_nonza(el: Element, conn: Any) -> bool | None:
    if el.tag == f"{{{NS}}}inactive":
        if conn.csi is None:
            conn.csi = Hold()
        return True
    if el.tag == f"{{{NS}}}active":
        hold, conn.csi = conn.csi, None
        if hold is not None:
            hold.release(conn)
        return True
    return None


def register(host: Host) -> None:
    host.hooks.on("c2s/nonza", on_nonza)
    host.stream_features.add("csi")
