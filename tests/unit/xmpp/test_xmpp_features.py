"""Feature modules over fake sessions and an in-memory store."""

from __future__ import annotations

from xml.etree.ElementTree import Element

import pytest

from xmpp.caps import verification_string
from xmpp.features.roster.state import SubState, inbound, outbound

from .fakes import DOMAIN, World, account

Z, L, W, Zh = (f"zhang.san@{DOMAIN}", f"li.si@{DOMAIN}", f"wang.wu@{DOMAIN}",
               f"zhao.liu@{DOMAIN}")
R = "{jabber:iq:roster}"
C = "{jabber:client}"


def presences(els: list[Element], frm: str | None = None) -> list[tuple[str, str]]:
    return [((el.get("from") or ""), el.get("type") or "available") for el in els
            if el.tag == C + "presence" and (frm is None or (el.get("from") or "").startswith(frm))]


# -- roster -----------------------------------------------------------------------------------

async def test_roster_get_has_own_unit_group() -> None:
    w = await World().start()
    z = await w.login("zhang.san", presence=False)
    reply = await w.iq(z, "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
    items = {i.get("jid"): i for i in reply.iter(R + "item")}
    assert set(items) == {L}
    assert items[L].get("subscription") == "both" and items[L].get("name") == "李四"
    assert [g.text for g in items[L].findall(R + "group")] == ["财政局"]


async def test_roster_all_groups_mode() -> None:
    w = await World(directory_groups="all").start()
    z = await w.login("zhang.san", presence=False)
    reply = await w.iq(z, "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
    groups = {i.get("jid"): i.findtext(R + "group") for i in reply.iter(R + "item")}
    assert groups == {L: "财政局", W: "卫生健康委员会", Zh: "卫生健康委员会"}


async def test_roster_versioning_and_push() -> None:
    w = await World().start()
    z = await w.login("zhang.san", presence=False)
    first = await w.iq(z, "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
    ver = first.find(R + "query").get("ver")  # type: ignore[union-attr]
    same = await w.iq(z, f"<iq type='get' id='r2'><query xmlns='jabber:iq:roster' ver='{ver}'/></iq>")
    assert same.get("type") == "result" and len(same) == 0  # RFC 6121 §2.6.3
    await w.send(z, "<iq type='set' id='s'><query xmlns='jabber:iq:roster'>"
                    "<item jid='friend@cx.example' name='F'><group>Friends</group></item>"
                    "</query></iq>")
    out = z.take()
    push = [el for el in out if el.get("type") == "set"]
    assert push and push[0].find(R + "query").get("ver") != ver  # type: ignore[union-attr]
    assert any(el.get("id") == "s" and el.get("type") == "result" for el in out)
    changed = await w.iq(z, f"<iq type='get' id='r3'><query xmlns='jabber:iq:roster' ver='{ver}'/></iq>")
    assert len(changed) == 1


async def test_directory_items_are_read_only() -> None:
    w = await World().start()
    z = await w.login("zhang.san", presence=False)
    for xml in (f"<item jid='{L}' name='x'/>", f"<item jid='{L}' subscription='remove'/>"):
        reply = await w.iq(z, f"<iq type='set' id='s'><query xmlns='jabber:iq:roster'>{xml}</query></iq>")
        assert reply.get("type") == "error"
        assert reply.find(f"{C}error/{{urn:ietf:params:xml:ns:xmpp-stanzas}}not-allowed") is not None


async def test_roster_set_validation() -> None:
    w = await World().start()
    z = await w.login("zhang.san", presence=False)
    two = ("<item jid='a@cx.example'/><item jid='b@cx.example'/>")
    r = await w.iq(z, f"<iq type='set' id='s'><query xmlns='jabber:iq:roster'>{two}</query></iq>")
    assert r.get("type") == "error"
    dup = "<item jid='a@cx.example'><group>g</group><group>g</group></item>"
    r = await w.iq(z, f"<iq type='set' id='s'><query xmlns='jabber:iq:roster'>{dup}</query></iq>")
    assert r.get("type") == "error"


async def test_subscription_flow_across_units() -> None:
    w = await World().start()
    z = await w.login("zhang.san")
    ww = await w.login("wang.wu")
    await w.iq(z, "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
    await w.iq(ww, "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
    z.take(), ww.take()
    await w.send(z, f"<presence to='{W}' type='subscribe'/>")
    assert presences(ww.take()) == [(Z, "subscribe")]
    assert w.store.items[Z][W].ask
    await w.send(ww, f"<presence to='{Z}' type='subscribed'/>")
    got = presences(z.take(), W)
    assert (W, "subscribed") in got and (f"{W}/r", "available") in got
    assert w.store.items[Z][W].subscription == "to"
    assert w.store.items[W][Z].subscription == "from"
    # Now wang.wu's presence changes reach zhang.san, but not the other way.
    await w.send(ww, "<presence><show>away</show></presence>")
    assert (f"{W}/r", "available") in presences(z.take())
    await w.send(z, "<presence><show>dnd</show></presence>")
    assert presences(ww.take(), Z) == []
    # Cancel: zhang.san unsubscribes.
    await w.send(z, f"<presence to='{W}' type='unsubscribe'/>")
    assert w.store.items[Z][W].subscription == "none"
    assert w.store.items[W][Z].subscription == "none"


async def test_pending_request_delivered_at_login() -> None:
    w = await World().start()
    z = await w.login("zhang.san")
    await w.send(z, f"<presence to='{W}' type='subscribe'><status>请加我</status></presence>")
    ww = await w.login("wang.wu")
    reqs = [el for el in ww.take() if el.get("type") == "subscribe"]
    assert len(reqs) == 1 and reqs[0].findtext(C + "status") == "请加我"


async def test_colleague_subscribe_is_answered_at_once() -> None:
    w = await World().start()
    z = await w.login("zhang.san")
    z.take()
    await w.send(z, f"<presence to='{L}' type='subscribe'/>")
    assert (L, "subscribed") in presences(z.take())


async def test_directory_change_pushes_new_colleague() -> None:
    w = await World().start()
    z = await w.login("zhang.san", presence=False)
    await w.iq(z, "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
    w.accounts.append(account("sun.qi", "finance", "孙七"))
    await w.cache.load()
    pushes = [el for el in z.take() if el.get("type") == "set"]
    assert [p.find(f"{R}query/{R}item").get("jid") for p in pushes] == [  # type: ignore[union-attr]
        f"sun.qi@{DOMAIN}"]


def test_subscription_state_machine() -> None:
    s = SubState()
    o = outbound(s, "subscribe")
    assert o.state == SubState("none", True) and o.forward
    i = inbound(SubState("from"), "subscribe")
    assert i.auto_reply == "subscribed" and not i.forward
    assert inbound(SubState("none", True), "subscribed").state.subscription == "to"
    assert inbound(SubState("from", True), "subscribed").state.subscription == "both"
    assert not inbound(SubState("none"), "subscribed").forward  # unsolicited: ignored
    assert outbound(SubState("none", False, True), "subscribed").state.subscription == "from"
    assert not outbound(SubState("none"), "subscribed").forward  # nothing to approve
    assert outbound(SubState("both"), "unsubscribe").state.subscription == "from"
    assert outbound(SubState("both"), "unsubscribed").state.subscription == "to"
    assert inbound(SubState("both"), "unsubscribe").state.subscription == "to"
    assert inbound(SubState("both"), "unsubscribed").state.subscription == "from"


# -- presence -----------------------------------------------------------------------------------

async def test_presence_between_colleagues_and_unavailable_on_disconnect() -> None:
    w = await World().start()
    z = await w.login("zhang.san", "desk")
    li = await w.login("li.si", "pc")
    assert (f"{L}/pc", "available") in presences(z.take())
    assert (f"{Z}/desk", "available") in presences(li.take())  # probe answered at login
    await w.logout(li)
    assert (f"{L}/pc", "unavailable") in presences(z.take())


async def test_directed_presence_then_unavailable() -> None:
    w = await World().start()
    z = await w.login("zhang.san", "desk")
    ww = await w.login("wang.wu", "pc")
    ww.take()
    await w.send(z, f"<presence to='{W}'/>")
    assert presences(ww.take()) == [(f"{Z}/desk", "available")]
    await w.logout(z)
    assert presences(ww.take()) == [(f"{Z}/desk", "unavailable")]


async def test_probe_needs_subscription() -> None:
    w = await World().start()
    z = await w.login("zhang.san", "desk")
    ww = await w.login("wang.wu", "pc")
    ww.take()
    await w.send(ww, f"<presence to='{Z}' type='probe'/>")
    assert presences(ww.take()) == []
    li = await w.login("li.si", "pc")
    li.take()
    await w.send(li, f"<presence to='{Z}' type='probe'/>")
    assert presences(li.take()) == [(f"{Z}/desk", "available")]
    assert z is not None


# -- blocking, carbons -------------------------------------------------------------------------

async def test_blocking() -> None:
    w = await World().start()
    z = await w.login("zhang.san", "desk")
    li = await w.login("li.si", "pc")
    await w.iq(li, "<iq type='get' id='b'><blocklist xmlns='urn:xmpp:blocking'/></iq>")
    z.take()
    r = await w.iq(li, f"<iq type='set' id='b2'><block xmlns='urn:xmpp:blocking'><item jid='{Z}'/></block></iq>")
    assert r.get("type") == "result"
    assert (f"{L}/pc", "unavailable") in presences(z.take())  # XEP-0191 §3.3
    li.take()
    await w.send(z, f"<message to='{L}' type='chat'><body>x</body></message>")
    assert li.take() == []
    err = z.take()
    assert err and err[0].get("type") == "error"
    await w.send(li, f"<message to='{Z}' type='chat'><body>y</body></message>")
    err = li.take()
    assert err[0].find(f"{C}error/{{urn:xmpp:blocking:errors}}blocked") is not None
    await w.iq(li, "<iq type='set' id='u'><unblock xmlns='urn:xmpp:blocking'/></iq>")
    await w.send(z, f"<message to='{L}' type='chat'><body>ok</body></message>")
    assert [el.findtext(C + "body") for el in li.take()] == ["ok"]


async def test_carbons_sent_and_received() -> None:
    w = await World().start()
    desk = await w.login("zhang.san", "desk")
    phone = await w.login("zhang.san", "phone")
    l1 = await w.login("li.si", "pc")
    l2 = await w.login("li.si", "tablet")
    for s in (phone, l2):
        r = await w.iq(s, "<iq type='set' id='c'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        assert r.get("type") == "result"
    for s in (desk, phone, l1, l2):
        s.take()
    await w.send(desk, f"<message to='{L}/pc' type='chat'><body>hi</body></message>")
    sent = phone.take()
    assert sent[0].find("{urn:xmpp:carbons:2}sent") is not None
    recv = l2.take()
    assert recv[0].find("{urn:xmpp:carbons:2}received") is not None
    assert [el.findtext(C + "body") for el in l1.take()] == ["hi"]
    await w.send(desk, f"<message to='{L}/pc' type='chat'><body>p</body>"
                       "<private xmlns='urn:xmpp:carbons:2'/></message>")
    assert phone.take() == [] and l2.take() == []


# -- vcard, private, disco, search, last -------------------------------------------------------

async def test_vcard_from_directory_and_photo() -> None:
    w = await World().start()
    li = await w.login("li.si")
    r = await w.iq(li, f"<iq type='get' id='v' to='{Z}'><vCard xmlns='vcard-temp'/></iq>")
    v = "{vcard-temp}"
    card = r.find(v + "vCard")
    assert card is not None
    assert card.findtext(v + "FN") == "张三"
    assert card.findtext(f"{v}ORG/{v}ORGNAME") == "财政局"
    assert card.findtext(v + "TITLE") == "科长"
    assert card.findtext(f"{v}EMAIL/{v}USERID") == Z
    s = await w.iq(li, "<iq type='set' id='p'><vCard xmlns='vcard-temp'><FN>hacker</FN><PHOTO>"
                       "<TYPE>image/png</TYPE><BINVAL>iVBORw0K</BINVAL></PHOTO></vCard></iq>")
    assert s.get("type") == "result"
    own = await w.iq(li, "<iq type='get' id='v2'><vCard xmlns='vcard-temp'/></iq>")
    assert own.findtext(f"{v}vCard/{v}FN") == "李四"
    assert own.findtext(f"{v}vCard/{v}PHOTO/{v}BINVAL") == "iVBORw0K"


async def test_private_storage_roundtrip() -> None:
    w = await World().start()
    z = await w.login("zhang.san")
    p = "jabber:iq:private"
    await w.iq(z, f"<iq type='set' id='1'><query xmlns='{p}'><prefs xmlns='urn:example:p'>"
                  "<a>1</a></prefs></query></iq>")
    r = await w.iq(z, f"<iq type='get' id='2'><query xmlns='{p}'><prefs xmlns='urn:example:p'/>"
                      "</query></iq>")
    assert r.findtext(f"{{{p}}}query/{{urn:example:p}}prefs/{{urn:example:p}}a") == "1"
    bad = await w.iq(z, f"<iq type='get' id='3'><query xmlns='{p}'><x xmlns='jabber:x:data'/>"
                        "</query></iq>")
    assert bad.get("type") == "error"


async def test_disco_advertises_registered_features_and_caps() -> None:
    w = await World().start()
    z = await w.login("zhang.san")
    di = "http://jabber.org/protocol/disco#info"
    r = await w.iq(z, f"<iq type='get' id='d' to='{DOMAIN}'><query xmlns='{di}'/></iq>")
    features = {f.get("var") for f in r.iter(f"{{{di}}}feature")}
    assert {"urn:xmpp:ping", "urn:xmpp:blocking", "urn:xmpp:carbons:2", "vcard-temp",
            "jabber:iq:search", "msgoffline", "jabber:iq:last"} <= features
    # MAM is advertised on the domain too (issue 15: profanity looks there; a query sent
    # to the domain answers from the sender's archive); stream management is not a disco
    # feature of the server.
    assert "urn:xmpp:mam:2" in features and "urn:xmpp:sm:3" not in features
    ver = verification_string(w.host.identities, w.host.features, w.host.server_forms)
    node = f"https://cx-gateway.example/caps#{ver}"
    r2 = await w.iq(z, f"<iq type='get' id='d2' to='{DOMAIN}'><query xmlns='{di}' node='{node}'/></iq>")
    assert r2.get("type") == "result"
    acct = await w.iq(z, f"<iq type='get' id='d3' to='{L}'><query xmlns='{di}'/></iq>")
    assert acct.find(f"{{{di}}}query/{{{di}}}identity").get("category") == "account"  # type: ignore[union-attr]


def test_caps_verification_string_xep0115_example() -> None:
    # XEP-0115 §5.2 simple example.
    ids = [("client", "pc", "Exodus 0.9.1")]
    feats = ["http://jabber.org/protocol/caps", "http://jabber.org/protocol/disco#info",
             "http://jabber.org/protocol/disco#items", "http://jabber.org/protocol/muc"]
    assert verification_string(ids, feats) == "QgayPKawpkPSDYmwT/WM94uAlu0="


async def test_search_by_name_and_unit() -> None:
    w = await World().start()
    z = await w.login("zhang.san")
    s = "jabber:iq:search"
    form = await w.iq(z, f"<iq type='get' id='f' to='{DOMAIN}'><query xmlns='{s}'/></iq>")
    assert form.find(f"{{{s}}}query/{{{s}}}first") is not None
    r = await w.iq(z, f"<iq type='set' id='q' to='{DOMAIN}'><query xmlns='{s}'><first>王</first></query></iq>")
    assert [i.get("jid") for i in r.iter(f"{{{s}}}item")] == [W]
    x = "jabber:x:data"
    r2 = await w.iq(z, f"<iq type='set' id='q2' to='{DOMAIN}'><query xmlns='{s}'><x xmlns='{x}' type='submit'>"
                       f"<field var='unit'><value>卫生</value></field></x></query></iq>")
    jids = [f.findtext(f"{{{x}}}value") for f in r2.iter(f"{{{x}}}field") if f.get("var") == "jid"
            and f.findtext(f"{{{x}}}value")]
    assert sorted(j for j in jids if j) == [W, Zh]


async def test_last_activity() -> None:
    w = await World().start()
    li = await w.login("li.si")
    ww = await w.login("wang.wu")
    z = await w.login("zhang.san")
    await w.logout(z)
    last = "jabber:iq:last"
    r = await w.iq(li, f"<iq type='get' id='l' to='{Z}'><query xmlns='{last}'/></iq>")
    assert r.get("type") == "result"
    r2 = await w.iq(ww, f"<iq type='get' id='l2' to='{Z}'><query xmlns='{last}'/></iq>")
    assert r2.get("type") == "error"  # not subscribed: forbidden
    up = await w.iq(li, f"<iq type='get' id='u' to='{DOMAIN}'><query xmlns='{last}'/></iq>")
    assert up.find(f"{{{last}}}query").get("seconds") is not None  # type: ignore[union-attr]


@pytest.mark.parametrize("xml", [
    "<iq type='get' id='p' to='cx.example'><ping xmlns='urn:xmpp:ping'/></iq>",
    "<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
    "<iq type='get' id='p' to='cx.example'><query xmlns='jabber:iq:version'/></iq>",
    "<iq type='get' id='p' to='cx.example'><time xmlns='urn:xmpp:time'/></iq>",
])
async def test_simple_server_iqs(xml: str) -> None:
    w = await World().start()
    z = await w.login("zhang.san")
    assert (await w.iq(z, xml)).get("type") == "result"
