"""Software Version (XEP-0092) of the server. The OS is not disclosed (XEP-0092 §6)."""

from __future__ import annotations

from importlib import metadata
from xml.etree.ElementTree import Element, SubElement

from ..host import Host
from ..router import IqEvent
from ..stanzas import iq_result

NS = "jabber:iq:version"
QUERY = f"{{{NS}}}query"


def _version() -> str:
    try:
        return metadata.version("cx-gateway")
    except metadata.PackageNotFoundError:
        return "0"


async def on_version(ev: IqEvent) -> Element:
    query = Element(QUERY)
    SubElement(query, f"{{{NS}}}name").text = "cx-gateway"
    SubElement(query, f"{{{NS}}}version").text = _version()
    return iq_result(ev.stanza, query)


def register(host: Host) -> None:
    host.bus.on(f"iq/host/get/{QUERY}", on_version)
    host.add_feature(NS)
