"""PEP end to end with slixmpp: an OMEMO device list published with publish-options
(access_model open) reaches a contact that asked for +notify in its entity caps; XEP-0402
bookmarks round trip (and their XEP-0048 view); an XEP-0084 avatar becomes the vCard photo.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any
from xml.etree import ElementTree as ET

import pytest
import slixmpp

from .test_xmpp import DOMAIN, TIMEOUT, Client

pytestmark = pytest.mark.integration


PS = "http://jabber.org/protocol/pubsub"
EVENT = f"{{{PS}#event}}"
DEVICELIST = "eu.siacs.conversations.axolotl.devicelist"
Z, L = f"zhang.san@{DOMAIN}", f"li.si@{DOMAIN}"


class PepClient(Client):
    """Announces +notify interests in its caps before its initial presence."""

    notify: tuple[str, ...] = ()

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        for plugin in ("xep_0115", "xep_0060", "xep_0163"):
            self.register_plugin(plugin)
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        self.add_event_handler("pubsub_publish", self._maybe_event)  # messages with no body

    def _maybe_event(self, msg: Any) -> None:
        items = msg.xml.find(f"{EVENT}event/{EVENT}items")
        if items is not None:
            self.events.put_nowait(items)

    async def _on_start(self, _event: Any) -> None:
        for ns in self.notify:
            self.plugin["xep_0030"].add_feature(f"{ns}+notify")
        await self.plugin["xep_0115"].update_caps(broadcast=False)
        await super()._on_start(_event)

    async def iq(self, xml: str, to: str | None = None) -> Any:
        iq = self.make_iq_set() if "type='set'" in xml[:40] else self.make_iq_get()
        if to:
            iq["to"] = to
        iq.append(ET.fromstring(xml).find("*"))  # type: ignore[arg-type]
        return await iq.send(timeout=TIMEOUT)

    async def next_event(self, node: str) -> Any:
        while True:
            items = await asyncio.wait_for(self.events.get(), TIMEOUT)
            if items.get("node") == node:
                return items


def publish(node: str, payload: str, item_id: str, **options: str) -> str:
    form = ""
    if options:
        fields = "".join(f"<field var='pubsub#{k}'><value>{v}</value></field>"
                         for k, v in options.items())
        form = ("<publish-options><x xmlns='jabber:x:data' type='submit'><field "
                f"var='FORM_TYPE' type='hidden'><value>{PS}#publish-options</value></field>"
                f"{fields}</x></publish-options>")
    return (f"<iq type='set'><pubsub xmlns='{PS}'><publish node='{node}'><item id='{item_id}'>"
            f"{payload}</item></publish>{form}</pubsub></iq>")


async def pep_connect(xmpp: Any, user: str, notify: tuple[str, ...] = ()) -> PepClient:
    local, _, resource = user.partition("/")
    c = PepClient(f"{local}@{DOMAIN}/{resource}")
    c.notify = notify
    return await c.login(xmpp.ports["xmpp"])  # type: ignore[return-value]


async def test_omemo_devicelist_reaches_contact_with_notify(xmpp: Any) -> None:
    li = await pep_connect(xmpp, "li.si/phone", notify=(DEVICELIST,))
    zhang = await pep_connect(xmpp, "zhang.san/desk")
    try:
        await asyncio.sleep(0.3)  # the server learns li's caps (disco#info to li)
        devices = "<list xmlns='eu.siacs.conversations.axolotl'><device id='4711'/></list>"
        res = await zhang.iq(publish(DEVICELIST, devices, "current", access_model="open"))
        assert res["type"] == "result"
        items = await li.next_event(DEVICELIST)
        device = items.find(f"{EVENT}item/{{eu.siacs.conversations.axolotl}}list/"
                            "{eu.siacs.conversations.axolotl}device")
        assert device is not None and device.get("id") == "4711"
        # Open access: a user of another unit (no subscription) may fetch it.
        wang = await pep_connect(xmpp, "wang.wu/pc")
        got = await wang.iq(f"<iq type='get'><pubsub xmlns='{PS}'><items node='{DEVICELIST}'/>"
                            "</pubsub></iq>", to=Z)
        assert got.xml.find(f".//{{{PS}}}item") is not None
        # A later login of li gets the last item at once (XEP-0163 §6.2).
        li2 = await pep_connect(xmpp, "li.si/tablet", notify=(DEVICELIST,))
        again = await li2.next_event(DEVICELIST)
        assert again.find(f"{EVENT}item").get("id") == "current"
        for c in (wang, li2):
            await c.close()
    finally:
        await li.close()
        await zhang.close()


async def test_bookmarks2_roundtrip(xmpp: Any) -> None:
    b = "urn:xmpp:bookmarks:1"
    zhang = await pep_connect(xmpp, "zhang.san/desk", notify=(b,))
    try:
        conf = (f"<conference xmlns='{b}' name='财政局' autojoin='true'><nick>张三</nick>"
                "</conference>")
        res = await zhang.iq(publish(b, conf, "finance@conference.cx.example",
                                     persist_items="true", max_items="max",
                                     send_last_published_item="never",
                                     access_model="whitelist"))
        assert res["type"] == "result"
        pushed = await zhang.next_event(b)  # XEP-0402 §3: own resources are notified
        assert pushed.find(f"{EVENT}item").get("id") == "finance@conference.cx.example"
        got = await zhang.iq(f"<iq type='get'><pubsub xmlns='{PS}'><items node='{b}'/>"
                             "</pubsub></iq>")
        item = got.xml.find(f".//{{{PS}}}item")
        assert item is not None and item.find(f"{{{b}}}conference").get("name") == "财政局"
        # The XEP-0048 view of the same bookmarks.
        legacy = await zhang.iq("<iq type='get'><query xmlns='jabber:iq:private'>"
                                "<storage xmlns='storage:bookmarks'/></query></iq>")
        room = legacy.xml.find(".//{storage:bookmarks}conference")
        assert room is not None and room.get("jid") == "finance@conference.cx.example"
        assert room.findtext("{storage:bookmarks}nick") == "张三"
        # Whitelist: a colleague cannot read them.
        li = await pep_connect(xmpp, "li.si/pc")
        denied = li.make_iq_get(ito=Z)
        denied.append(ET.fromstring(f"<pubsub xmlns='{PS}'><items node='{b}'/></pubsub>"))
        with pytest.raises(slixmpp.exceptions.IqError) as closed:
            await denied.send(timeout=TIMEOUT)
        assert closed.value.condition == "not-allowed"
        await li.close()
    finally:
        await zhang.close()


async def test_avatar_publish_sets_vcard_photo(xmpp: Any) -> None:
    zhang = await pep_connect(xmpp, "zhang.san/desk")
    try:
        png = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
        sha1 = hashlib.sha1(png).hexdigest()
        data = base64.b64encode(png).decode()
        assert (await zhang.iq(publish("urn:xmpp:avatar:data",
                                       f"<data xmlns='urn:xmpp:avatar:data'>{data}</data>",
                                       sha1)))["type"] == "result"
        meta = ("<metadata xmlns='urn:xmpp:avatar:metadata'><info bytes='72' "
                f"id='{sha1}' height='1' width='1' type='image/png'/></metadata>")
        assert (await zhang.iq(publish("urn:xmpp:avatar:metadata", meta, sha1)))["type"] \
            == "result"
        card = await zhang.plugin["xep_0054"].get_vcard(slixmpp.JID(Z), local=False)
        assert card["vcard_temp"]["PHOTO"]["BINVAL"] == png
    finally:
        await zhang.close()
