# ruff: noqa: F811  (the xmpp fixture is imported from test_xmpp)
"""MAM end to end (XEP-0313 with XEP-0059 paging) with slixmpp: a chat archived in both
users' archives, paged forwards and backwards, filtered, with stanza-ids on delivery."""

from __future__ import annotations

import asyncio
from typing import Any
from xml.etree.ElementTree import fromstring

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from tests.integration.test_xmpp import DOMAIN, cfg_overrides, xmpp  # noqa: F401

pytestmark = pytest.mark.integration

Z, L = f"zhang.san@{DOMAIN}", f"li.si@{DOMAIN}"


def bodies(iq: Any) -> list[str]:
    return [m["mam_result"]["forwarded"]["stanza"]["body"] for m in iq["mam"]["results"]]


async def raw_query(client: Any, inner: str) -> list[str]:
    """A query written by hand (slixmpp cannot send an empty <before/>)."""
    results: list[str] = []

    def on_message(msg: Any) -> None:
        fwd = msg.xml.find("{urn:xmpp:mam:2}result/{urn:xmpp:forward:0}forwarded")
        if fwd is not None:
            results.append(fwd.findtext("{jabber:client}message/{jabber:client}body"))

    client.register_handler(Callback("raw-mam", MatchXPath(
        "{jabber:client}message/{urn:xmpp:mam:2}result"), on_message))
    try:
        iq = client.make_iq_set()
        iq.append(fromstring(f"<query xmlns='urn:xmpp:mam:2' queryid='raw'>{inner}</query>"))
        await iq.send(timeout=5)
        for _ in range(50):  # events are dispatched after the iq result's future
            await asyncio.sleep(0.02)
    finally:
        client.remove_handler("raw-mam")
    return results


async def test_mam_paging_both_archives(xmpp: Any) -> None:
    z = await xmpp.connect("zhang.san")
    z.register_plugin("xep_0313")
    z.register_plugin("xep_0359")
    li = await xmpp.connect("li.si")
    li.register_plugin("xep_0313")
    for i in range(25):
        li.send_message(mto=Z, mbody=f"m{i:02}", mtype="chat")
    got = [await z.next_message() for _ in range(25)]
    assert [m["body"] for m in got] == [f"m{i:02}" for i in range(25)]
    # XEP-0359: each delivered message carries the recipient archive's id.
    ids = [m.xml.find("{urn:xmpp:sid:0}stanza-id").get("id") for m in got]
    assert all(m.xml.find("{urn:xmpp:sid:0}stanza-id").get("by") == Z for m in got)
    assert len(set(ids)) == 25

    mam = z.plugin["xep_0313"]
    page1 = await mam.retrieve(with_jid=L, rsm={"max": 10})
    assert bodies(page1) == [f"m{i:02}" for i in range(10)]
    fin = page1["mam_fin"]
    assert int(fin["rsm"]["count"]) == 25 and fin["complete"] in (False, "false", None, "")
    assert fin["rsm"]["first"] == ids[0] and fin["rsm"]["last"] == ids[9]
    page2 = await mam.retrieve(with_jid=L, rsm={"max": 10, "after": ids[9]})
    assert bodies(page2) == [f"m{i:02}" for i in range(10, 20)]
    page3 = await mam.retrieve(with_jid=L, rsm={"max": 10, "after": ids[19]})
    assert bodies(page3) == [f"m{i:02}" for i in range(20, 25)]
    assert page3["mam_fin"]["complete"] in (True, "true")
    last = await raw_query(z, "<set xmlns='http://jabber.org/protocol/rsm'><max>5</max>"
                              "<before/></set>")  # the newest page
    assert last == [f"m{i:02}" for i in range(20, 25)]
    back = await mam.retrieve(rsm={"max": 5, "before": ids[20]})
    assert bodies(back) == [f"m{i:02}" for i in range(15, 20)]
    # The sender's archive has the same conversation from the same row: the same ids
    # (XEP-0359: unique within each archive), paged and counted in its own view.
    sent = await li.plugin["xep_0313"].retrieve(with_jid=Z, rsm={"max": 50})
    assert bodies(sent) == [f"m{i:02}" for i in range(25)]
    assert [m["mam_result"]["id"] for m in sent["mam"]["results"]] == ids
    assert int(sent["mam_fin"]["rsm"]["count"]) == 25
    sent2 = await li.plugin["xep_0313"].retrieve(with_jid=Z, rsm={"max": 10, "after": ids[9]})
    assert bodies(sent2) == [f"m{i:02}" for i in range(10, 20)]
    assert int(sent2["mam_fin"]["rsm"]["count"]) == 25
    # Nobody reads someone else's archive.
    with pytest.raises(IqError):
        await mam.retrieve(jid=L, rsm={"max": 5}, timeout=5)


async def test_mam_prefs_never(xmpp: Any) -> None:
    z = await xmpp.connect("zhang.san")
    li = await xmpp.connect("li.si")
    z.register_plugin("xep_0313")
    iq = z.make_iq_set()
    iq.append(fromstring("<prefs xmlns='urn:xmpp:mam:2' default='always'><always/>"
                         f"<never><jid>{L}</jid></never></prefs>"))
    res = await iq.send(timeout=5)
    assert res.xml.find("{urn:xmpp:mam:2}prefs/{urn:xmpp:mam:2}never/{urn:xmpp:mam:2}jid").text == L
    li.send_message(mto=Z, mbody="not archived", mtype="chat")
    msg = await z.next_message()
    assert msg.xml.find("{urn:xmpp:sid:0}stanza-id") is None
    await asyncio.sleep(0.1)
    page = await z.plugin["xep_0313"].retrieve(with_jid=L, rsm={"max": 10})
    assert bodies(page) == []
