"""RSM paging (pure) and the archive query logic over the in-memory store."""

from __future__ import annotations

from xml.etree.ElementTree import fromstring

import pytest

from tests.xmpp_doubles import MemoryMamStore
from xmpp.features import rsm
from xmpp.features.mam import Filters, Prefs, parse_form
from xmpp.proto.errors import StanzaError


def q(inner: str) -> object:
    return fromstring(f"<query xmlns='urn:xmpp:mam:2'><set xmlns='{rsm.NS}'>{inner}</set></query>")


def test_parse_requests() -> None:
    assert rsm.parse(None) == rsm.Request()
    r = rsm.parse(q("<max>10</max><after>x</after>"))  # type: ignore[arg-type]
    assert (r.max, r.after, r.backwards, r.limit) == (10, "x", False, 11)
    last = rsm.parse(q("<max>5</max><before/>"))  # type: ignore[arg-type]
    assert last.before == "" and last.backwards
    assert rsm.parse(q("<max>100000</max>")).max == rsm.MAX_MAX  # type: ignore[arg-type]
    with pytest.raises(StanzaError):
        rsm.parse(q("<max>-1</max>"))  # type: ignore[arg-type]
    with pytest.raises(StanzaError):
        rsm.parse(q("<after>a</after><before>b</before>"))  # type: ignore[arg-type]


def test_page_cuts_and_orders() -> None:
    fwd = rsm.Request(max=3)
    assert rsm.page([1, 2, 3, 4], fwd) == ([1, 2, 3], False)
    assert rsm.page([1, 2, 3], fwd) == ([1, 2, 3], True)
    back = rsm.Request(max=2, before="")
    assert rsm.page([9, 8, 7], back) == ([8, 9], False)
    assert rsm.page([], back) == ([], True)


async def test_memory_store_keyset_pages() -> None:
    store = MemoryMamStore()
    await store.write([("z", f"id{i}", "l" if i % 2 else "w", f"<message id='{i}'/>")
                       for i in range(10)])
    await store.write([("z", "id3", "l", "dup")])  # a second write of an id is a no-op
    rows, complete, total = await store.query("z", Filters(), rsm.Request(max=4))
    assert [r.stanza_id for r in rows] == ["id0", "id1", "id2", "id3"] and not complete
    assert total == 10
    rows, complete, _ = await store.query("z", Filters(), rsm.Request(max=4, after="id7"))
    assert [r.stanza_id for r in rows] == ["id8", "id9"] and complete
    rows, complete, _ = await store.query("z", Filters(), rsm.Request(max=3, before="id5"))
    assert [r.stanza_id for r in rows] == ["id2", "id3", "id4"] and not complete
    rows, _, total = await store.query("z", Filters(with_="l", after_id="id2"), rsm.Request(max=9))
    assert [r.stanza_id for r in rows] == ["id3", "id5", "id7", "id9"] and total == 4
    with pytest.raises(StanzaError):
        await store.query("z", Filters(), rsm.Request(after="nope"))


def test_form_and_prefs() -> None:
    x = fromstring(
        "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'>"
        "<field var='FORM_TYPE'><value>urn:xmpp:mam:2</value></field>"
        "<field var='with'><value>li.si@cx.example/pc</value></field>"
        "<field var='start'><value>2026-01-01T00:00:00Z</value></field></x></query>")
    f = parse_form(x)
    assert f.with_ == "li.si@cx.example" and f.start is not None and f.start.year == 2026
    bad = fromstring("<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data'>"
                     "<field var='color'><value>red</value></field></x></query>")
    with pytest.raises(StanzaError):
        parse_form(bad)
    p = Prefs("roster", frozenset({"a"}), frozenset({"b"}))
    assert (p.decide("a"), p.decide("b"), p.decide("c")) == (True, False, None)
    assert Prefs("never").decide("c") is False and Prefs().decide("c") is True
