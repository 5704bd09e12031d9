"""vCards (XEP-0054) from the directory, with avatars (XEP-0153).

FN is the account's Chinese display name, ORG/ORGNAME its unit, TITLE its title, EMAIL
its address. These fields belong to the directory: a vCard set changes only the PHOTO
(the avatar, XEP-0153 §3.1) and ignores the rest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from xml.etree.ElementTree import Element, SubElement

from ..host import Host
from ..proto.errors import StanzaError
from ..router import IqEvent
from ..stanzas import iq_result

NS = "vcard-temp"
VCARD = f"{{{NS}}}vCard"
MAX_PHOTO = 128 * 1024  # bytes, decoded


def _t(name: str) -> str:
    return f"{{{NS}}}{name}"


class VCard:
    def __init__(self, host: Host) -> None:
        self.host = host

    async def get(self, ev: IqEvent) -> Element:
        target = ev.target
        snapshot = self.host.directory.snapshot
        account = snapshot.accounts.get(target)
        if account is None:
            raise StanzaError("item-not-found")
        card = Element(VCARD)
        SubElement(card, _t("FN")).text = account.display_name
        n = SubElement(card, _t("N"))
        # Chinese names: family name first, one character in most cases.
        name = account.display_name
        if name and not name.isascii() and " " not in name and len(name) >= 2:
            SubElement(n, _t("FAMILY")).text = name[0]
            SubElement(n, _t("GIVEN")).text = name[1:]
        else:
            SubElement(n, _t("GIVEN")).text = name
        SubElement(card, _t("NICKNAME")).text = name
        org = SubElement(card, _t("ORG"))
        SubElement(org, _t("ORGNAME")).text = snapshot.units.get(account.unit, account.unit)
        SubElement(org, _t("ORGUNIT")).text = account.unit
        if account.title:
            SubElement(card, _t("TITLE")).text = account.title
        email = SubElement(card, _t("EMAIL"))
        SubElement(email, _t("INTERNET"))
        SubElement(email, _t("PREF"))
        SubElement(email, _t("USERID")).text = account.address
        SubElement(card, _t("JABBERID")).text = account.address
        avatar = await self.host.store.avatar(target)
        if avatar is not None:
            photo = SubElement(card, _t("PHOTO"))
            SubElement(photo, _t("TYPE")).text = avatar[0]
            SubElement(photo, _t("BINVAL")).text = base64.b64encode(avatar[1]).decode()
        return iq_result(ev.stanza, card)

    async def set(self, ev: IqEvent) -> Element:
        card = ev.stanza[0]
        photo = card.find(_t("PHOTO"))
        if photo is None:
            await self.host.store.set_avatar(ev.origin.bare, "", b"", "")
            return iq_result(ev.stanza)
        mime = (photo.findtext(_t("TYPE")) or "image/png").strip()
        try:
            data = base64.b64decode("".join((photo.findtext(_t("BINVAL")) or "").split()),
                                    validate=True)
        except (binascii.Error, ValueError):
            raise StanzaError("bad-request", "BINVAL is not base64") from None
        if len(data) > MAX_PHOTO:
            raise StanzaError("not-acceptable", "Photo too large")
        if not mime.startswith("image/"):
            raise StanzaError("not-acceptable", "Photo must be an image")
        await self.host.store.set_avatar(ev.origin.bare, mime, data,
                                         hashlib.sha1(data).hexdigest())
        return iq_result(ev.stanza)


def register(host: Host) -> None:
    v = VCard(host)
    host.bus.on(f"iq/self/get/{VCARD}", v.get)
    host.bus.on(f"iq/bare/get/{VCARD}", v.get)
    host.bus.on(f"iq/self/set/{VCARD}", v.set)
    host.add_feature(NS, account=True)
