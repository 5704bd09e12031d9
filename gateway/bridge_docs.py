"""The documents → XMPP bridge: when a sealed document arrives (or is signed for), the
units' online clerks get an XMPP chat message from the server.

Wired here in `gateway/` because neither `mailrelay` nor `xmpp` may import the other:
it listens on the event bus for the facts `mailrelay.documents.events` defines and
hands a plain <message/> to the XMPP router.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any
from xml.etree.ElementTree import Element, SubElement

from gateway.app import COMPONENT_FACTORIES, Endpoint, Services
from mailrelay.documents import events as doc_events
from xmpp.proto import ns

log = logging.getLogger("cxgw.bridge")

URGENCY_ZH = {"normal": "普通", "urgent": "加急", "extra-urgent": "特急"}


def arrival_text(e: doc_events.DocumentArrived) -> str:
    number = f"（{e.number}）" if e.number else ""
    return (f"收到公文《{e.title}》{number}，来自 {e.from_unit}，紧急程度："
            f"{URGENCY_ZH.get(e.urgency, e.urgency)}。印章已验证（{e.signer or '—'}）。"
            "请在邮件客户端查收；签收：打开公文并发送已读回执（阅读回执）。\n"
            f"Official document #{e.document} \"{e.title}\" from {e.from_unit} arrived"
            " (seal verified). To sign for it, open it in your mail client and send the"
            " read receipt it asks for.")


def revoked_text(e: doc_events.DocumentRevokedAfterDelivery) -> str:
    return (f"公文《{e.title}》（{e.number}）的印章已因密钥泄露被吊销，本公文不再可信，"
            f"请勿依据办理。\nThe seal of document #{e.document} \"{e.title}\" from"
            f" {e.from_unit} was revoked for key compromise: it is no longer trusted.")


def signed_text(e: doc_events.DocumentSigned) -> str:
    return (f"公文《{e.title}》已由 {e.unit}（{e.by}）签收。\n"
            f"Document #{e.document} \"{e.title}\" was signed for by {e.unit} ({e.by}).")


class DocsXmppBridge:
    name = "docs-xmpp-bridge"

    def __init__(self, s: Services) -> None:
        self.s = s
        self.router: Any = None

    async def start(self) -> list[Endpoint]:
        xmpp = self.s.components.get("xmpp")
        if xmpp is None or "docs" not in self.s.components:
            return []  # one of the two sides is disabled: nothing to bridge
        self.router = xmpp.host.router
        self.s.bus.on(doc_events.ARRIVED, self._arrived)
        self.s.bus.on(doc_events.SIGNED, self._signed)
        self.s.bus.on(doc_events.REVOKED, self._revoked)
        return []

    def _send(self, bare: str, text: str) -> int:
        msg = Element(ns.MESSAGE, {"type": "chat", "from": self.s.cfg.server.domain,
                                   "to": bare, "id": "cxdoc-" + secrets.token_hex(6)})
        SubElement(msg, f"{{{ns.CLIENT}}}body").text = text
        return int(self.router.to_available(bare, msg))

    async def _arrived(self, e: doc_events.DocumentArrived) -> None:
        told = sum(self._send(c, arrival_text(e)) for c in e.clerks)
        log.info("document %s arrived at %s: %d online clerk session(s) told", e.document,
                 e.unit, told)

    async def _signed(self, e: doc_events.DocumentSigned) -> None:
        book = self.s.components["mail"].parts.book()
        for clerk in book.clerks(e.from_unit):
            self._send(clerk, signed_text(e))

    async def _revoked(self, e: doc_events.DocumentRevokedAfterDelivery) -> None:
        for clerk in e.clerks:
            self._send(clerk, revoked_text(e))

    async def stop(self) -> None:
        if self.router is not None:
            self.s.bus.off(doc_events.ARRIVED, self._arrived)
            self.s.bus.off(doc_events.SIGNED, self._signed)
            self.s.bus.off(doc_events.REVOKED, self._revoked)


COMPONENT_FACTORIES.append(DocsXmppBridge)
