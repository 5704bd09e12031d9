"""Archiving decisions of the one-row archive (issue 17): which row a chat message makes
under each side's preferences, the id both views share, and both views read through
the feature's query handler (fake sessions, in-memory store)."""

from __future__ import annotations

from xml.etree.ElementTree import Element

from tests.xmpp_doubles import MemoryMamStore
from xmpp import features
from xmpp.features import mam

from .fakes import DOMAIN, FakeSession, World

Z, L = f"zhang.san@{DOMAIN}", f"li.si@{DOMAIN}"
NS = "urn:xmpp:mam:2"
SID = "{urn:xmpp:sid:0}stanza-id"


async def _world() -> tuple[World, mam.Mam]:
    w = World()
    await w.cache.load()
    features.load(w.host, tuple(n for n in features.DEFAULT if n != "mam"))
    m = mam.register(w.host)
    await w.host.start()
    return w, m


async def _view(w: World, s: FakeSession, with_: str = "") -> list[tuple[str, str]]:
    """(archive id, body) of every message in `s`'s archive (optionally with= `with_`)."""
    form = (f"<x xmlns='jabber:x:data' type='submit'><field var='with'><value>{with_}"
            "</value></field></x>") if with_ else ""
    await w.send(s, f"<iq type='set' id='q'><query xmlns='{NS}'>{form}</query></iq>")
    got = s.take()
    assert [el.get("type") for el in got if el.get("id") == "q"] == ["result"]
    out = []
    for el in got:
        res = el.find(f"{{{NS}}}result")
        if res is not None:
            body = res.findtext(".//{jabber:client}body")
            out.append((res.get("id", ""), body or ""))
    return out


async def _prefs(w: World, s: FakeSession, default: str) -> None:
    r = await w.iq(s, f"<iq type='set' id='p'><prefs xmlns='{NS}' default='{default}'/></iq>")
    assert r.get("type") == "result"


def _received(s: FakeSession) -> list[Element]:
    return [el for el in s.take() if el.tag == "{jabber:client}message"]


async def test_one_row_both_views_share_the_recipients_id() -> None:
    w, m = await _world()
    z, li = await w.login("zhang.san"), await w.login("li.si")
    await w.send(li, f"<message to='{Z}' type='chat'><body>hi</body></message>")
    (got,) = _received(z)
    sid = got.find(SID)
    assert sid is not None and sid.get("by") == Z
    await m.flushed()
    assert isinstance(m.store, MemoryMamStore) and len(m.store.rows) == 1
    assert await _view(w, z) == [(sid.get("id"), "hi")]
    assert await _view(w, li) == [(sid.get("id"), "hi")]
    assert await _view(w, z, L) == await _view(w, li, Z) == [(sid.get("id"), "hi")]
    assert await _view(w, z, Z) == []


async def test_one_side_archives_alone() -> None:
    w, m = await _world()
    z, li = await w.login("zhang.san"), await w.login("li.si")
    await _prefs(w, z, "never")  # the recipient keeps nothing: no id on delivery
    await w.send(li, f"<message to='{Z}' type='chat'><body>one</body></message>")
    assert _received(z)[0].find(SID) is None
    await _prefs(w, z, "always")
    await _prefs(w, li, "never")  # the sender keeps nothing
    await w.send(li, f"<message to='{Z}' type='chat'><body>two</body></message>")
    assert _received(z)[0].find(SID) is not None
    await w.send(z, f"<message to='{Z}' type='chat'><body>self</body></message>")  # note to self
    await m.flushed()
    assert [b for _, b in await _view(w, li)] == ["one"]
    assert [b for _, b in await _view(w, z)] == ["two", "self"]
    assert [b for _, b in await _view(w, z, L)] == ["two"]
    assert len(m.store.rows) == 3  # type: ignore[union-attr]
    await m.store.purge(Z)
    assert await _view(w, z) == [] and [b for _, b in await _view(w, li)] == ["one"]


async def test_headline_and_no_store_are_not_archived() -> None:
    w, m = await _world()
    z, li = await w.login("zhang.san"), await w.login("li.si")
    await w.send(li, f"<message to='{Z}' type='headline'><body>h</body></message>")
    await w.send(li, f"<message to='{Z}' type='chat'><body>n</body>"
                     "<no-store xmlns='urn:xmpp:hints'/></message>")
    await m.flushed()
    assert await _view(w, z) == [] and await _view(w, li) == []
