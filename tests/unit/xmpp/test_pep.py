"""PEP (XEP-0163), bookmarks (XEP-0402/0048) and avatars (XEP-0084) over fakes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from xml.etree.ElementTree import Element

from xmpp.caps import verification_string
from xmpp.features.pep.node import MAX_ITEMS, OptionError, normalise, unmet

from .fakes import DOMAIN, FakeSession, World

Z, L, W = f"zhang.san@{DOMAIN}", f"li.si@{DOMAIN}", f"wang.wu@{DOMAIN}"
PS = "http://jabber.org/protocol/pubsub"
EV = "{http://jabber.org/protocol/pubsub#event}"
DL = "eu.siacs.conversations.axolotl.devicelist"
CLIENT_IDENT = [("client", "pc", "test")]


def publish(node: str, payload: str, item_id: str = "current", options: str = "",
            iq_id: str = "p") -> str:
    form = ""
    if options:
        form = ("<publish-options><x xmlns='jabber:x:data' type='submit'>"
                "<field var='FORM_TYPE' type='hidden'><value>"
                f"{PS}#publish-options</value></field>{options}</x></publish-options>")
    return (f"<iq type='set' id='{iq_id}'><pubsub xmlns='{PS}'><publish node='{node}'>"
            f"<item id='{item_id}'>{payload}</item></publish>{form}</pubsub></iq>")


def opt(var: str, value: str) -> str:
    return f"<field var='pubsub#{var}'><value>{value}</value></field>"


DEVICES = "<list xmlns='eu.siacs.conversations.axolotl'><device id='1234'/></list>"


async def with_caps(w: World, s: FakeSession, notify: list[str]) -> None:
    """Send presence with caps and answer the server's disco#info query."""
    features = ["http://jabber.org/protocol/disco#info", *[f"{n}+notify" for n in notify]]
    ver = verification_string(CLIENT_IDENT, features)
    await w.send(s, f"<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
                    f"node='http://test' ver='{ver}'/></presence>")
    asks = [el for el in s.take() if el.get("type") == "get" and
            (el.get("id") or "").startswith("pep-caps-")]
    if asks:
        feats = "".join(f"<feature var='{f}'/>" for f in features)
        await w.send(s, f"<iq type='result' id='{asks[0].get('id')}' to='{DOMAIN}'>"
                        f"<query xmlns='http://jabber.org/protocol/disco#info' "
                        f"node='http://test#{ver}'><identity category='client' type='pc' "
                        f"name='test'/>{feats}</query></iq>")
    for _ in range(5):
        await asyncio.sleep(0)


def events(s: FakeSession, node: str) -> list[Element]:
    out = []
    for el in s.take():
        items = el.find(f"{EV}event/{EV}items")
        if items is not None and items.get("node") == node:
            out.append(items)
    return out


def test_node_options() -> None:
    assert normalise("max_items", "max") == MAX_ITEMS
    assert normalise("access_model", "open") == "open"
    assert unmet({"access_model": "open"}, {"access_model": "open"}) == []
    assert unmet({}, {"access_model": "open"}) == ["access_model"]  # default is presence
    for field, value in (("access_model", "roster"), ("max_items", "0"), ("foo", "1")):
        try:
            normalise(field, value)
        except OptionError:
            continue
        raise AssertionError(field)


async def test_omemo_devicelist_open_notifies_contact_with_notify() -> None:
    w = await World().start()
    z = await w.login("zhang.san", "phone")
    li = await w.login("li.si", "pc")
    wang = await w.login("wang.wu", "pc")  # not a contact of zhang.san
    await with_caps(w, li, [DL])
    await with_caps(w, wang, [DL])
    z.take()
    reply = await w.iq(z, publish(DL, DEVICES, options=opt("access_model", "open")))
    assert reply.get("type") == "result"
    got = events(li, DL)
    assert got and got[0].find(f"{EV}item").get("id") == "current"  # type: ignore[union-attr]
    assert events(wang, DL) == []  # no presence subscription: no notification
    # Open access: anyone may retrieve the items.
    res = await w.iq(wang, f"<iq type='get' id='g' to='{Z}'><pubsub xmlns='{PS}'>"
                           f"<items node='{DL}'/></pubsub></iq>")
    assert res.get("type") == "result"
    assert res.find(f"{{{PS}}}pubsub/{{{PS}}}items/{{{PS}}}item") is not None
    # Same options again: fine. Another access model: precondition-not-met.
    assert (await w.iq(z, publish(DL, DEVICES, options=opt("access_model", "open"),
                                  iq_id="p2"))).get("type") == "result"
    err = await w.iq(z, publish(DL, DEVICES, options=opt("access_model", "whitelist"),
                                iq_id="p3"))
    assert err.get("type") == "error"
    assert err.find("{jabber:client}error/{http://jabber.org/protocol/pubsub#errors}"
                    "precondition-not-met") is not None


async def test_last_item_sent_when_contact_comes_online() -> None:
    w = await World().start()
    z = await w.login("zhang.san", "phone")
    await w.iq(z, publish(DL, DEVICES, options=opt("access_model", "open")))
    li = await w.login("li.si", "pc", presence=False)
    await with_caps(w, li, [DL])
    got = events(li, DL)
    assert len(got) == 1


async def test_presence_model_and_whitelist_access() -> None:
    w = await World().start()
    z = await w.login("zhang.san")
    li = await w.login("li.si")
    wang = await w.login("wang.wu")
    await w.iq(z, publish("urn:example:tune", "<tune xmlns='urn:example:tune'/>"))
    items = f"<pubsub xmlns='{PS}'><items node='urn:example:tune'/></pubsub>"
    assert (await w.iq(li, f"<iq type='get' id='a' to='{Z}'>{items}</iq>")).get("type") == \
        "result"  # colleague: presence subscription
    err = await w.iq(wang, f"<iq type='get' id='b' to='{Z}'>{items}</iq>")
    assert err.find("{jabber:client}error/{urn:ietf:params:xml:ns:xmpp-stanzas}"
                    "not-authorized") is not None
    await w.iq(z, publish("urn:example:secret", "<s xmlns='urn:example:secret'/>",
                          options=opt("access_model", "whitelist")))
    secret = f"<pubsub xmlns='{PS}'><items node='urn:example:secret'/></pubsub>"
    err = await w.iq(li, f"<iq type='get' id='c' to='{Z}'>{secret}</iq>")
    assert err.find("{jabber:client}error/{urn:ietf:params:xml:ns:xmpp-stanzas}"
                    "not-allowed") is not None
    own = await w.iq(z, f"<iq type='get' id='d'>{secret}</iq>")
    assert own.get("type") == "result"


async def test_max_items_retract_and_configure() -> None:
    w = await World().start()
    z = await w.login("zhang.san")
    node = "urn:example:multi"
    for i in range(4):
        await w.iq(z, publish(node, f"<n xmlns='urn:example:multi'>{i}</n>", f"i{i}",
                              options=opt("max_items", "3"), iq_id=f"p{i}"))
    res = await w.iq(z, f"<iq type='get' id='g'><pubsub xmlns='{PS}'><items node='{node}'/>"
                        "</pubsub></iq>")
    ids = [i.get("id") for i in res.iter(f"{{{PS}}}item")]
    assert ids == ["i1", "i2", "i3"]
    r = await w.iq(z, f"<iq type='set' id='r'><pubsub xmlns='{PS}'><retract node='{node}' "
                      "notify='true'><item id='i2'/></retract></pubsub></iq>")
    assert r.get("type") == "result"
    own = "http://jabber.org/protocol/pubsub#owner"
    form = await w.iq(z, f"<iq type='get' id='c'><pubsub xmlns='{own}'><configure "
                         f"node='{node}'/></pubsub></iq>")
    values = {f.get("var"): f.findtext("{jabber:x:data}value")
              for f in form.iter("{jabber:x:data}field")}
    assert values["pubsub#max_items"] == "3" and values["pubsub#access_model"] == "presence"
    done = await w.iq(z, f"<iq type='set' id='c2'><pubsub xmlns='{own}'><configure "
                         f"node='{node}'><x xmlns='jabber:x:data' type='submit'>"
                         f"{opt('max_items', '1')}</x></configure></pubsub></iq>")
    assert done.get("type") == "result"
    res = await w.iq(z, f"<iq type='get' id='g2'><pubsub xmlns='{PS}'><items node='{node}'/>"
                        "</pubsub></iq>")
    assert [i.get("id") for i in res.iter(f"{{{PS}}}item")] == ["i3"]
    gone = await w.iq(z, f"<iq type='set' id='d'><pubsub xmlns='{own}'><delete node='{node}'/>"
                         "</pubsub></iq>")
    assert gone.get("type") == "result"


async def test_publish_to_someone_else_is_forbidden() -> None:
    w = await World().start()
    li = await w.login("li.si")
    err = await w.iq(li, publish(DL, DEVICES).replace("type='set'", f"type='set' to='{Z}'"))
    assert err.get("type") == "error"


async def test_bookmarks_legacy_private_storage_and_pep_agree() -> None:
    w = await World().start()
    z = await w.login("zhang.san")
    storage = ("<storage xmlns='storage:bookmarks'><conference jid='room@conference.cx.example'"
               " name='Room' autojoin='true'><nick>zs</nick></conference>"
               "<url name='site' url='https://cx.example/'/></storage>")
    r = await w.iq(z, f"<iq type='set' id='s'><query xmlns='jabber:iq:private'>{storage}"
                      "</query></iq>")
    assert r.get("type") == "result"
    b = "urn:xmpp:bookmarks:1"
    res = await w.iq(z, f"<iq type='get' id='g'><pubsub xmlns='{PS}'><items node='{b}'/>"
                        "</pubsub></iq>")
    item = res.find(f".//{{{PS}}}item")
    assert item is not None and item.get("id") == "room@conference.cx.example"
    conf = item.find(f"{{{b}}}conference")
    assert conf is not None and conf.get("autojoin") == "true"
    assert conf.findtext(f"{{{b}}}nick") == "zs"
    # A XEP-0402 client adds a room; the XEP-0048 view shows it (and keeps the URL).
    await w.iq(z, publish(b, f"<conference xmlns='{b}' name='Two' autojoin='false'/>",
                          "two@conference.cx.example",
                          options=opt("access_model", "whitelist") + opt("max_items", "max")
                          + opt("send_last_published_item", "never")
                          + opt("persist_items", "true"), iq_id="p"))
    got = await w.iq(z, "<iq type='get' id='g2'><query xmlns='jabber:iq:private'>"
                        "<storage xmlns='storage:bookmarks'/></query></iq>")
    jids = {c.get("jid") for c in got.iter("{storage:bookmarks}conference")}
    assert jids == {"room@conference.cx.example", "two@conference.cx.example"}
    assert got.find(".//{storage:bookmarks}url") is not None
    # Removing a room in XEP-0048 retracts it from PEP.
    r = await w.iq(z, "<iq type='set' id='s2'><query xmlns='jabber:iq:private'>"
                      "<storage xmlns='storage:bookmarks'/></query></iq>")
    res = await w.iq(z, f"<iq type='get' id='g3'><pubsub xmlns='{PS}'><items node='{b}'/>"
                        "</pubsub></iq>")
    assert res.find(f".//{{{PS}}}item") is None


async def test_avatar_metadata_updates_vcard_photo() -> None:
    w = await World().start()
    z = await w.login("zhang.san")
    png = b"\x89PNG\r\n\x1a\n" + b"x" * 100
    sha1 = hashlib.sha1(png).hexdigest()
    data = base64.b64encode(png).decode()
    await w.iq(z, publish("urn:xmpp:avatar:data",
                          f"<data xmlns='urn:xmpp:avatar:data'>{data}</data>", sha1))
    await w.iq(z, publish("urn:xmpp:avatar:metadata",
                          "<metadata xmlns='urn:xmpp:avatar:metadata'><info bytes='108' "
                          f"id='{sha1}' height='1' width='1' type='image/png'/></metadata>",
                          sha1, iq_id="m"))
    assert w.store.avatars[Z] == ("image/png", png, sha1)
    await w.iq(z, publish("urn:xmpp:avatar:metadata",
                          "<metadata xmlns='urn:xmpp:avatar:metadata'/>", "none", iq_id="m2"))
    assert Z not in w.store.avatars


async def test_disco_advertises_pep() -> None:
    w = await World().start()
    z = await w.login("zhang.san")
    res = await w.iq(z, "<iq type='get' id='d'><query "
                        "xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    feats = {f.get("var") for f in res.iter("{http://jabber.org/protocol/disco#info}feature")}
    assert f"{PS}#publish-options" in feats and "urn:xmpp:bookmarks:1#compat" in feats
