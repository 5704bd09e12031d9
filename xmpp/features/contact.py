"""Contact addresses for XMPP services (XEP-0157): a ``serverinfo`` form on the server's
disco#info naming whom to write about abuse, administration, security... From
``xmpp.contact_addresses`` ("kind=uri"); by default abuse and admin go to the postmaster."""

from __future__ import annotations

from xml.etree.ElementTree import Element, SubElement

from ..host import Host

XDATA = "jabber:x:data"
FORM_TYPE = "http://jabber.org/network/serverinfo"  # XEP-0157 §2


def contact_form(domain: str, entries: list[str]) -> Element:
    """The XEP-0157 form: FORM_TYPE plus one ``<kind>-addresses`` field per kind."""
    by_kind: dict[str, list[str]] = {}
    for item in entries or [f"abuse=mailto:postmaster@{domain}",
                            f"admin=mailto:postmaster@{domain}"]:
        kind, _, uri = item.partition("=")
        by_kind.setdefault(kind.strip(), []).append(uri.strip())
    x = Element(f"{{{XDATA}}}x", {"type": "result"})
    ft = SubElement(x, f"{{{XDATA}}}field", {"var": "FORM_TYPE", "type": "hidden"})
    SubElement(ft, f"{{{XDATA}}}value").text = FORM_TYPE
    for kind in sorted(by_kind):
        f = SubElement(x, f"{{{XDATA}}}field", {"var": f"{kind}-addresses", "type": "list-multi"})
        for uri in by_kind[kind]:
            SubElement(f, f"{{{XDATA}}}value").text = uri
    return x


def register(host: Host) -> None:
    host.server_forms.append(contact_form(host.domain, list(host.cfg.contact_addresses)))
