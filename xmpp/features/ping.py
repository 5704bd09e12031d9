"""XMPP Ping (XEP-0199): the server answers pings to itself and on behalf of accounts."""

from __future__ import annotations

from xml.etree.ElementTree import Element

from ..host import Host
from ..router import IqEvent
from ..stanzas import iq_result

PING = "{urn:xmpp:ping}ping"


async def on_ping(ev: IqEvent) -> Element:
    return iq_result(ev.stanza)  # XEP-0199 §4.2: an empty result


def register(host: Host) -> None:
    for scope in ("host", "self"):
        host.bus.on(f"iq/{scope}/get/{PING}", on_ping)
    host.add_feature("urn:xmpp:ping")
