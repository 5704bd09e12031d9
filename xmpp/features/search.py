"""User search (XEP-0055) over the directory, at the server's domain.

Both the legacy fields (first, last, nick, email) and a data form (XEP-0004 with fields
``name``, ``unit``, ``email``) are offered; matching is case-insensitive substring.
Results are capped at ``MAX_RESULTS``.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element, SubElement

from ..host import Host
from ..proto.errors import StanzaError
from ..router import IqEvent
from ..stanzas import iq_result

NS = "jabber:iq:search"
QUERY = f"{{{NS}}}query"
XDATA = "jabber:x:data"
MAX_RESULTS = 50


def _t(name: str) -> str:
    return f"{{{NS}}}{name}"


def _x(name: str) -> str:
    return f"{{{XDATA}}}{name}"


class Search:
    def __init__(self, host: Host) -> None:
        self.host = host

    async def form(self, ev: IqEvent) -> Element:
        query = Element(QUERY)
        SubElement(query, _t("instructions")).text = (
            "Fill in part of a name, unit or address / 输入姓名、单位或地址的一部分")
        for f in ("first", "last", "nick", "email"):
            SubElement(query, _t(f))
        x = SubElement(query, _x("x"), {"type": "form"})
        SubElement(x, _x("title")).text = "Directory search"
        SubElement(SubElement(x, _x("field"), {"type": "hidden", "var": "FORM_TYPE"}),
                   _x("value")).text = NS
        for var, label in (("name", "Name"), ("unit", "Unit"), ("email", "Address")):
            SubElement(x, _x("field"), {"type": "text-single", "var": var, "label": label})
        return iq_result(ev.stanza, query)

    async def search(self, ev: IqEvent) -> Element:
        query = ev.stanza[0]
        x = query.find(_x("x"))
        terms: dict[str, str] = {}
        if x is not None:
            for field in x.findall(_x("field")):
                var, value = field.get("var", ""), (field.findtext(_x("value")) or "").strip()
                if var in ("name", "unit", "email") and value:
                    terms[var] = value.lower()
        else:
            for legacy, key in (("first", "name"), ("last", "name"), ("nick", "name"),
                                ("email", "email")):
                value = (query.findtext(_t(legacy)) or "").strip()
                if value:
                    terms[key] = value.lower()
        if not terms:
            raise StanzaError("bad-request", "Give at least one search term")
        snapshot = self.host.directory.snapshot
        found = []
        for acct in snapshot.accounts.values():
            unit_name = snapshot.units.get(acct.unit, acct.unit)
            if "name" in terms and terms["name"] not in acct.display_name.lower():
                continue
            if "email" in terms and terms["email"] not in acct.address:
                continue
            if "unit" in terms and terms["unit"] not in unit_name.lower() \
                    and terms["unit"] not in acct.unit:
                continue
            found.append((acct, unit_name))
            if len(found) >= MAX_RESULTS:
                break
        found.sort(key=lambda t: t[0].address)
        out = Element(QUERY)
        if x is not None:
            form = SubElement(out, _x("x"), {"type": "result"})
            SubElement(SubElement(form, _x("field"), {"type": "hidden", "var": "FORM_TYPE"}),
                       _x("value")).text = NS
            reported = SubElement(form, _x("reported"))
            for var, label in (("jid", "JID"), ("name", "Name"), ("unit", "Unit"),
                               ("title", "Title")):
                SubElement(reported, _x("field"), {"var": var, "label": label,
                                                   "type": "jid-single" if var == "jid"
                                                   else "text-single"})
            for acct, unit_name in found:
                item = SubElement(form, _x("item"))
                for var, value in (("jid", acct.address), ("name", acct.display_name),
                                   ("unit", unit_name), ("title", acct.title)):
                    SubElement(SubElement(item, _x("field"), {"var": var}),
                               _x("value")).text = value
        else:
            for acct, _unit in found:
                item = SubElement(out, _t("item"), {"jid": acct.address})
                SubElement(item, _t("first")).text = acct.display_name
                SubElement(item, _t("last"))
                SubElement(item, _t("nick")).text = acct.display_name
                SubElement(item, _t("email")).text = acct.address
        return iq_result(ev.stanza, out)


def register(host: Host) -> None:
    s = Search(host)
    host.bus.on(f"iq/host/get/{QUERY}", s.form)
    host.bus.on(f"iq/host/set/{QUERY}", s.search)
    host.add_feature(NS)
