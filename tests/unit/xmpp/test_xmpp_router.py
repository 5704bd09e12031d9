"""Routing rules of RFC 6121 §8 with fake sessions (no sockets, no database)."""

from __future__ import annotations

from xml.etree.ElementTree import Element

from xmpp.jid import JID
from xmpp.proto.errors import StreamError

from .fakes import DOMAIN, World

Z, L, W = f"zhang.san@{DOMAIN}", f"li.si@{DOMAIN}", f"wang.wu@{DOMAIN}"


def bodies(els: list[Element]) -> list[str]:
    return [el.findtext("{jabber:client}body") or "" for el in els
            if el.tag == "{jabber:client}message" and el.get("type") != "error"]


def errors(els: list[Element]) -> list[str]:
    out: list[str] = []
    for el in els:
        if el.get("type") == "error":
            err = el.find("{jabber:client}error")
            assert err is not None
            out.extend(c.tag.partition("}")[2] for c in err if not c.tag.endswith("}text"))
    return out


async def test_full_jid_exact_match() -> None:
    w = await World().start()
    z = await w.login("zhang.san", "desk")
    l1 = await w.login("li.si", "a")
    l2 = await w.login("li.si", "b")
    for s in (z, l1, l2):
        s.take()
    await w.send(z, f"<message to='{L}/b' type='chat'><body>hi</body></message>")
    assert bodies(l2.take()) == ["hi"]
    assert bodies(l1.take()) == []


async def test_bare_chat_goes_to_all_non_negative_resources() -> None:
    w = await World().start()
    z = await w.login("zhang.san", "desk")
    l1 = await w.login("li.si", "a", priority=5)
    l2 = await w.login("li.si", "b", priority=0)
    l3 = await w.login("li.si", "c", priority=-1)
    for s in (z, l1, l2, l3):
        s.take()
    await w.send(z, f"<message to='{L}' type='chat'><body>all</body></message>")
    assert bodies(l1.take()) == ["all"] and bodies(l2.take()) == ["all"]
    assert bodies(l3.take()) == []  # RFC 6121 §8.5.2.1.1: negative priority never


async def test_bare_normal_goes_to_highest_priority() -> None:
    w = await World().start()
    z = await w.login("zhang.san", "desk")
    l1 = await w.login("li.si", "a", priority=5)
    l2 = await w.login("li.si", "b", priority=1)
    for s in (z, l1, l2):
        s.take()
    await w.send(z, f"<message to='{L}'><body>top</body></message>")
    assert bodies(l1.take()) == ["top"] and bodies(l2.take()) == []


async def test_unknown_full_jid_falls_back_to_bare() -> None:
    w = await World().start()
    z = await w.login("zhang.san", "desk")
    li = await w.login("li.si", "a")
    li.take()
    await w.send(z, f"<message to='{L}/gone' type='chat'><body>x</body></message>")
    assert bodies(li.take()) == ["x"]


async def test_unknown_account_gets_service_unavailable() -> None:
    w = await World().start()
    z = await w.login("zhang.san", "desk")
    z.take()
    await w.send(z, f"<message to='nobody@{DOMAIN}' type='chat'><body>x</body></message>")
    await w.send(z, f"<iq to='nobody@{DOMAIN}' type='get' id='q'><query xmlns='jabber:iq:version'/></iq>")
    await w.send(z, f"<presence to='nobody@{DOMAIN}'/>")
    assert errors(z.take()) == ["service-unavailable", "service-unavailable"]


async def test_remote_domain_not_found() -> None:
    w = await World().start()
    z = await w.login("zhang.san", "desk")
    z.take()
    await w.send(z, "<message to='x@elsewhere.example' type='chat'><body>x</body></message>")
    assert errors(z.take()) == ["remote-server-not-found"]


async def test_iq_to_missing_full_jid_and_error_never_answered() -> None:
    w = await World().start()
    z = await w.login("zhang.san", "desk")
    z.take()
    await w.send(z, f"<iq to='{L}/x' type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>")
    await w.send(z, f"<message to='{L}/x' type='error'><body>e</body></message>")
    assert errors(z.take()) == ["service-unavailable"]


async def test_iq_between_full_jids_is_delivered() -> None:
    w = await World().start()
    z = await w.login("zhang.san", "desk")
    li = await w.login("li.si", "a")
    li.take()
    await w.send(z, f"<iq to='{L}/a' type='get' id='v'><query xmlns='jabber:iq:version'/></iq>")
    got = li.take()
    assert len(got) == 1 and got[0].get("from") == f"{Z}/desk"


async def test_unhandled_iq_to_server_is_service_unavailable() -> None:
    w = await World().start()
    z = await w.login("zhang.san", "desk")
    reply = await w.iq(z, "<iq type='get' id='u'><query xmlns='urn:example:unknown'/></iq>")
    assert errors([reply]) == ["service-unavailable"]


async def test_bind_conflict_new_session_wins() -> None:
    w = await World().start()
    old = await w.login("zhang.san", "desk")
    new = await w.login("zhang.san", "desk")
    assert isinstance(old.closed_with, StreamError)
    assert old.closed_with.condition == "conflict"
    assert w.router.session(f"{Z}/desk") is new
    assert not w.router.unbind(old)  # the old one is no longer in the table


async def test_message_to_offline_user_is_stored_then_delivered() -> None:
    w = await World().start()
    z = await w.login("zhang.san", "desk")
    await w.send(z, f"<message to='{W}' type='chat'><body>later</body></message>")
    await w.send(z, f"<message to='{W}' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
    assert errors(z.take()) == []
    assert len(w.store.offline[W]) == 1  # chat states alone are not stored
    ww = await w.login("wang.wu", "pc")
    got = [el for el in ww.take() if el.tag == "{jabber:client}message"]
    assert bodies(got) == ["later"]
    assert got[0].find("{urn:xmpp:delay}delay") is not None


async def test_offline_cap_bounces() -> None:
    w = await World(offline_max=2).start()
    z = await w.login("zhang.san", "desk")
    z.take()
    for i in range(3):
        await w.send(z, f"<message to='{W}' type='chat'><body>{i}</body></message>")
    assert errors(z.take()) == ["service-unavailable"]


async def test_negative_priority_initial_presence_does_not_flush_offline() -> None:
    w = await World().start()
    z = await w.login("zhang.san", "desk")
    await w.send(z, f"<message to='{W}' type='chat'><body>wait</body></message>")
    ww = await w.login("wang.wu", "bot", priority=-1)
    assert bodies(ww.take()) == []
    assert len(w.store.offline[W]) == 1


async def test_headline_to_nobody_is_dropped_silently() -> None:
    w = await World().start()
    z = await w.login("zhang.san", "desk")
    z.take()
    await w.send(z, f"<message to='{W}' type='headline'><body>news</body></message>")
    assert z.take() == [] and W not in w.store.offline


async def test_session_of_another_node_takes_the_message_instead_of_offline() -> None:
    """Issue 14: a proxy of another node's session is in the table like a local one; the
    remote side hears local binds, presence changes and unbinds (not the proxy's)."""
    from xmpp.router import Resource
    w = await World().start()
    heard: list[tuple[str, str]] = []

    class Remote:
        def bound(self, session: Resource) -> None:
            heard.append(("bound", session.full))

        def unbound(self, session: Resource) -> None:
            heard.append(("unbound", session.full))

        def changed(self, session: Resource) -> None:
            heard.append(("changed", session.full))

        def registered(self, session: Resource) -> None:
            return None

        def stored_offline(self, bare: str) -> None:
            heard.append(("offline", bare))

    class Proxy(Resource):
        local = False

        def __init__(self) -> None:
            super().__init__()
            self.got: list[bytes] = []

        def deliver_bytes(self, data: bytes) -> None:
            self.got.append(data)

    w.router.remote = Remote()
    proxy = Proxy()
    proxy.set_jid(JID("wang.wu", DOMAIN, "far"))
    proxy.available = True
    w.router.put_proxy(proxy)
    z = await w.login("zhang.san", "desk")
    await w.send(z, f"<message to='{W}' type='chat'><body>elsewhere</body></message>")
    assert len(proxy.got) == 1 and b"elsewhere" in proxy.got[0] and W not in w.store.offline
    assert ("bound", f"zhang.san@{DOMAIN}/desk") in heard
    assert not any(full.startswith("wang.wu") for _, full in heard)
    assert w.router.count() == 1  # the proxy is not a session of this node
    w.router.drop_proxy(proxy)
    assert w.router.session(f"{W}/far") is None


def test_sessions_table_counts() -> None:
    from .fakes import FakeSession
    w = World()
    a, b = FakeSession(), FakeSession()
    w.router.bind(a, JID("zhang.san", DOMAIN, "1"))
    w.router.bind(b, JID("zhang.san", DOMAIN, "2"))
    assert w.router.count() == 2
    assert w.router.unbind(a) and w.router.count() == 1
    assert w.router.unbind(b) and w.router.sessions == {}


async def test_component_domain_gets_its_stanzas() -> None:
    w = await World().start()
    got: list[Element] = []
    w.router.components[f"conference.{DOMAIN}"] = lambda el, origin: got.append(el)
    z = await w.login("zhang.san", "desk")
    await w.send(z, f"<presence to='room@conference.{DOMAIN}/zhang'/>")
    assert len(got) == 1 and got[0].get("from") == f"{Z}/desk"
