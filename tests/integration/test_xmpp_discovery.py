# ruff: noqa: F811  (fixtures imported from test_xmpp_muc)
"""What clients look for, where they look (issue 15 item 6), with slixmpp against the
running server: profanity's MAM discovery (the server domain's disco#info, then a query)
and its OMEMO device-list fetch (an error with the legacy code="404" for its own empty
node, then a publish); PEP nodes on the account's disco#items, filtered by access model;
rooms advertising and answering MAM; XEP-0157 contact addresses with a caps hash that
counts the form (checked with slixmpp's own XEP-0115 implementation)."""

from __future__ import annotations

import asyncio
from typing import Any
from xml.etree.ElementTree import fromstring

import pytest
from slixmpp.exceptions import IqError

from tests.integration.test_xmpp_muc import FIN, cfg_overrides, xmpp  # noqa: F401
from tests.integration.test_xmpp_muc_mam import room_query
from xmpp.caps import NODE

from .test_xmpp import DOMAIN, TIMEOUT

pytestmark = pytest.mark.integration

MAM = "urn:xmpp:mam:2"
PS = "http://jabber.org/protocol/pubsub"
INFO = "http://jabber.org/protocol/disco#info"
ITEMS = "http://jabber.org/protocol/disco#items"
DEVICELIST = "eu.siacs.conversations.axolotl.devicelist"
XDATA = "jabber:x:data"


async def iq(client: Any, xml: str, to: str | None = None, kind: str = "get") -> Any:
    stanza = client.make_iq_set() if kind == "set" else client.make_iq_get()
    if to:
        stanza["to"] = to
    stanza.append(fromstring(xml))
    return await stanza.send(timeout=TIMEOUT)


def features(result: Any) -> set[str]:
    return {f.get("var") for f in result.xml.iter(f"{{{INFO}}}feature")}


async def test_profanity_mam_discovery_and_query_on_domain(xmpp: Any) -> None:
    zhang = await xmpp.connect("zhang.san")
    info = await iq(zhang, f"<query xmlns='{INFO}'/>", to=DOMAIN)
    assert MAM in features(info)  # profanity's `/mam on` checks the server's features
    res = await iq(zhang, f"<query xmlns='{MAM}' queryid='p1'/>", to=DOMAIN, kind="set")
    assert res.xml.find(f"{{{MAM}}}fin") is not None
    own = await iq(zhang, f"<query xmlns='{INFO}'/>", to=f"zhang.san@{DOMAIN}")
    assert MAM in features(own)


async def test_profanity_omemo_devicelist_fetch_then_publish(xmpp: Any) -> None:
    zhang = await xmpp.connect("zhang.san")
    me = f"zhang.san@{DOMAIN}"
    with pytest.raises(IqError) as missing:
        await iq(zhang, f"<pubsub xmlns='{PS}'><items node='{DEVICELIST}'/></pubsub>", to=me)
    err = missing.value.iq.xml.find("{jabber:client}error")
    # profanity (omemo.c) publishes its own device list only on this legacy code.
    assert missing.value.condition == "item-not-found" and err.get("code") == "404"
    await iq(zhang, f"<pubsub xmlns='{PS}'><publish node='{DEVICELIST}'><item id='current'>"
             "<list xmlns='eu.siacs.conversations.axolotl'><device id='4711'/></list></item>"
             "</publish><publish-options><x xmlns='jabber:x:data' type='submit'>"
             "<field var='FORM_TYPE' type='hidden'>"
             f"<value>{PS}#publish-options</value></field>"
             "<field var='pubsub#access_model'><value>open</value></field></x>"
             "</publish-options></pubsub>", kind="set")
    await iq(zhang, f"<pubsub xmlns='{PS}'><publish node='urn:xmpp:private'><item id='x'>"
             "<note xmlns='urn:example:n'/></item></publish></pubsub>", kind="set")
    got = await iq(zhang, f"<pubsub xmlns='{PS}'><items node='{DEVICELIST}'/></pubsub>", to=me)
    assert got.xml.find(f".//{{{PS}}}item").get("id") == "current"
    # PEP nodes on the account's disco#items: the owner sees both ...
    items = await iq(zhang, f"<query xmlns='{ITEMS}'/>", to=me)
    nodes = {(i.get("jid"), i.get("node")) for i in items.xml.iter(f"{{{ITEMS}}}item")}
    assert nodes == {(me, DEVICELIST), (me, "urn:xmpp:private")}
    # ... someone without a presence subscription only the open node.
    wang = await xmpp.connect("wang.wu")
    items = await iq(wang, f"<query xmlns='{ITEMS}'/>", to=me)
    assert {i.get("node") for i in items.xml.iter(f"{{{ITEMS}}}item")} == {DEVICELIST}


async def test_room_advertises_and_answers_mam(xmpp: Any) -> None:
    zhang = await xmpp.connect("zhang.san")
    await zhang.muc.join_muc_wait(FIN, "张三", timeout=TIMEOUT)
    info = await iq(zhang, f"<query xmlns='{INFO}'/>", to=str(FIN))
    assert MAM in features(info)  # poezio reads room history only when this is there
    zhang.send_message(mto=FIN, mbody="周报", mtype="groupchat")
    await zhang.said()
    got: list[str] = []
    for _ in range(50):
        got = await room_query(zhang, str(FIN))  # answers with a <fin/> or raises
        if got:
            break
        await asyncio.sleep(0.1)  # archive rows are written in batches
    assert got == ["周报"]


async def test_contact_addresses_and_caps_hash(xmpp: Any) -> None:
    zhang = await xmpp.connect("zhang.san")
    info = await iq(zhang, f"<query xmlns='{INFO}'/>", to=DOMAIN)
    forms = info.xml.findall(f"{{{INFO}}}query/{{{XDATA}}}x")
    (form,) = forms
    fields = {f.get("var"): [v.text for v in f.findall(f"{{{XDATA}}}value")]
              for f in form.findall(f"{{{XDATA}}}field")}
    assert fields["FORM_TYPE"] == ["http://jabber.org/network/serverinfo"]
    assert fields["abuse-addresses"] == [f"mailto:postmaster@{DOMAIN}"]
    assert fields["admin-addresses"] == [f"mailto:postmaster@{DOMAIN}"]
    # XEP-0115 §5.4: the verification string counts the form. The server answers
    # disco#info at node#ver only for its own ver: compute it as a client does.
    zhang.register_plugin("xep_0115")
    ver = zhang.plugin["xep_0115"].generate_verstring(info["disco_info"], "sha-1")
    node = f"{NODE}#{ver}"
    again = await iq(zhang, f"<query xmlns='{INFO}' node='{node}'/>", to=DOMAIN)
    assert features(again) == features(info)
    # The same hash is announced in the stream features (XEP-0115 §6.3).
    c2s = xmpp.services.components["xmpp"].c2s
    assert c2s.config_starttls.features.caps == (NODE, ver)
    with pytest.raises(IqError):  # a hash without the form would not match
        await iq(zhang, f"<query xmlns='{INFO}' node='{NODE}#{_without_form(info)}'/>",
                 to=DOMAIN)


def _without_form(info: Any) -> str:
    from xmpp.caps import verification_string
    q = info.xml.find(f"{{{INFO}}}query")
    ids = [(i.get("category"), i.get("type"), i.get("name") or "")
           for i in q.iter(f"{{{INFO}}}identity")]
    return verification_string(ids, [f.get("var") for f in q.iter(f"{{{INFO}}}feature")])
