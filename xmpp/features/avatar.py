"""User Avatar (XEP-0084) over PEP, kept consistent with vCard avatars (XEP-0153).

Clients publish ``urn:xmpp:avatar:data`` and ``urn:xmpp:avatar:metadata`` themselves (plain
PEP). When new metadata names an avatar whose data item is stored, the same image becomes
the vCard PHOTO (through the XMPP store, as a vCard set would); empty metadata (XEP-0084
§4.5, avatar disabled) removes the PHOTO. Meets PEP at ``pep/changed`` and ``pep/items``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from typing import Any

from ..events import PepItems
from ..host import Host

log = logging.getLogger("cxgw.xmpp.avatar")

DATA = "urn:xmpp:avatar:data"
METADATA = "urn:xmpp:avatar:metadata"
MAX_VCARD_PHOTO = 128 * 1024  # bytes: what a vCard PHOTO may hold (xmpp.features.vcard)



class Avatar:
    def __init__(self, host: Host) -> None:
        self.host = host

    async def on_changed(self, ev: Any) -> None:
        if ev.node != METADATA or ev.item is None:
            return None
        metadata = ev.item.find(f"{{{METADATA}}}metadata")
        if metadata is None:
            return None
        infos = metadata.findall(f"{{{METADATA}}}info")
        if not infos:
            await self.host.store.set_avatar(ev.owner, "", b"", "")
            return None
        # The PNG (XEP-0084 §4.2.1 MUST) or the first one stored with us.
        infos.sort(key=lambda i: (i.get("type") != "image/png", bool(i.get("url"))))
        for info in infos:
            sha1 = info.get("id") or ""
            mime = info.get("type") or "image/png"
            found = await self.host.bus.fire("pep/items", PepItems(ev.owner, DATA, sha1)) or []
            if not found:
                continue
            data_el = found[-1].find(f"{{{DATA}}}data")
            try:
                data = base64.b64decode("".join((data_el.text or "").split()), validate=True) \
                    if data_el is not None else b""
            except (binascii.Error, ValueError):
                continue
            if not data or hashlib.sha1(data).hexdigest() != sha1.lower() or \
                    len(data) > MAX_VCARD_PHOTO or not mime.startswith("image/"):
                continue
            await self.host.store.set_avatar(ev.owner, mime, data, sha1.lower())
            return None
        return None


def register(host: Host) -> None:
    a = Avatar(host)
    host.bus.on("pep/changed", a.on_changed)
    # XEP-0084 needs nothing beyond PEP from the server; clients discover PEP support.
