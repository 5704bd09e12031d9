"""Entity Time (XEP-0202): the server's time in UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from xml.etree.ElementTree import Element, SubElement

from ..host import Host
from ..router import IqEvent
from ..stanzas import iq_result

NS = "urn:xmpp:time"
TIME = f"{{{NS}}}time"


async def on_time(ev: IqEvent) -> Element:
    now = datetime.now(UTC)
    el = Element(TIME)
    SubElement(el, f"{{{NS}}}tzo").text = "+00:00"
    # XEP-0202 §4: UTC in XEP-0082 format, fractions of a second allowed.
    SubElement(el, f"{{{NS}}}utc").text = now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return iq_result(ev.stanza, el)


def register(host: Host) -> None:
    host.bus.on(f"iq/host/get/{TIME}", on_time)
    host.add_feature(NS)
