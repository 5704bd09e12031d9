"""Result Set Management (XEP-0059): the request, the page plan and the answer. Pure.

A request names at most one cursor: ``<after>id</after>`` (the page after that item),
``<before>id</before>`` (the page before it) or an empty ``<before/>`` (the last page).
The archive fetches ``limit = max + 1`` rows from the cursor in the paging direction (an
index range, never OFFSET) and ``page`` cuts the extra row off: its presence is what says
whether the result set is complete in that direction (XEP-0313 §4.3 ``complete``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar
from xml.etree.ElementTree import Element, SubElement

from ..proto.errors import StanzaError

NS = "http://jabber.org/protocol/rsm"
SET = f"{{{NS}}}set"
DEFAULT_MAX = 50
MAX_MAX = 250  # a client may ask for fewer, never more (XEP-0059 §2.1: server's limit)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Request:
    """What the client asked for. `before` is None when absent and "" for ``<before/>``."""

    max: int = DEFAULT_MAX
    after: str | None = None
    before: str | None = None

    @property
    def backwards(self) -> bool:
        """Paging towards older items (``<before/>``, with or without an id)."""
        return self.before is not None

    @property
    def limit(self) -> int:
        """Rows to fetch: one more than the page, to learn whether more exist."""
        return self.max + 1


def parse(parent: Element | None) -> Request:
    """The ``<set/>`` child of `parent` (a MAM query), or the defaults."""
    el = parent.find(SET) if parent is not None else None
    if el is None:
        return Request()
    text = el.findtext(f"{{{NS}}}max")
    try:
        limit = DEFAULT_MAX if text is None else int(text.strip())
    except ValueError:
        raise StanzaError("bad-request", "RSM max is not a number") from None
    if limit < 0:
        raise StanzaError("bad-request", "RSM max is negative")
    after = el.findtext(f"{{{NS}}}after")
    before_el = el.find(f"{{{NS}}}before")
    before = None if before_el is None else (before_el.text or "").strip()
    if after is not None and before is not None:
        raise StanzaError("bad-request", "RSM after and before together")
    if after is not None and not after.strip():
        raise StanzaError("bad-request", "RSM after is empty")
    return Request(min(limit, MAX_MAX), after.strip() if after else None, before)


def page(rows: Sequence[T], req: Request) -> tuple[list[T], bool]:
    """Cut the fetched `rows` (in fetch order: oldest first forwards, newest first
    backwards; at most ``req.limit``) to the page, in chronological order, and say
    whether nothing lies beyond it in the paging direction."""
    complete = len(rows) <= req.max
    items = list(rows[:req.max])
    if req.backwards:
        items.reverse()
    return items, complete


def result(first: str | None, last: str | None, count: int | None = None,
           first_index: int | None = None) -> Element:
    """``<set><first/><last/><count/></set>`` (XEP-0059 §2.6; no first/last when empty)."""
    el = Element(SET)
    if first is not None and last is not None:
        f = SubElement(el, f"{{{NS}}}first")
        f.text = first
        if first_index is not None:
            f.set("index", str(first_index))
        SubElement(el, f"{{{NS}}}last").text = last
    if count is not None:
        SubElement(el, f"{{{NS}}}count").text = str(count)
    return el
