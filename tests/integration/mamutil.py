"""A MAM query to a room, shared by the MUC archive tests."""

from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import fromstring

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath


async def room_archive(client: Any, room: str) -> list[str]:
    """A MAM query to the room (XEP-0313 §4): the bodies, in archive order (results come
    before the iq result, on whichever node the room's home is)."""
    bodies: list[str] = []

    def on_message(msg: Any) -> None:
        fwd = msg.xml.find("{urn:xmpp:mam:2}result/{urn:xmpp:forward:0}forwarded")
        if fwd is not None:
            bodies.append(fwd.findtext("{jabber:client}message/{jabber:client}body"))

    client.register_handler(Callback("room-mam", MatchXPath(
        "{jabber:client}message/{urn:xmpp:mam:2}result"), on_message))
    try:
        iq = client.make_iq_set(ito=room)
        iq.append(fromstring("<query xmlns='urn:xmpp:mam:2' queryid='q'/>"))
        await iq.send(timeout=10)
    finally:
        client.remove_handler("room-mam")
    return bodies
