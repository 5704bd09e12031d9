"""In-band password change (XEP-0077 §3.3) for signed-in users; in-band *registration*
is not offered (accounts come from the directory).

The query goes to the server (or has no 'to'). The new password goes through the
directory's password rules and becomes new SCRAM keys; the account's other sessions on
every protocol end. The change itself is done by whoever answers the bus event
``account/password/set`` (``PasswordChange``; the gateway wires the directory): it
returns True on success or ``Refused(reason)`` (text for the user); nobody answering
means the change is not available here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from xml.etree.ElementTree import Element, SubElement

from ..host import Host
from ..proto.errors import StanzaError
from ..router import IqEvent
from ..stanzas import iq_result

NS = "jabber:iq:register"
QUERY = f"{{{NS}}}query"
MAX_PASSWORD = 1024


@dataclass(frozen=True, slots=True)
class PasswordChange:
    address: str    # bare JID = mail address
    password: str
    keep: str       # the session making the change, kept: "xmpp:<full jid>"


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str


async def get(ev: IqEvent) -> Element:
    """XEP-0077 §3.3: a registered user sees <registered/> and the fields to change."""
    q = Element(QUERY)
    SubElement(q, f"{{{NS}}}registered")
    SubElement(q, f"{{{NS}}}username").text = ev.origin.bare.partition("@")[0]
    SubElement(q, f"{{{NS}}}password")
    return iq_result(ev.stanza, q)


def _set(host: Host) -> Callable[[IqEvent], Awaitable[Element]]:
    async def handler(ev: IqEvent) -> Element:
        q = ev.stanza[0]
        if q.find(f"{{{NS}}}remove") is not None:
            # §3.2 cancellation: accounts belong to the directory, not to clients.
            raise StanzaError("not-allowed", "Accounts are managed by the directory")
        username = (q.findtext(f"{{{NS}}}username") or "").strip().lower()
        password = q.findtext(f"{{{NS}}}password")
        local = ev.origin.bare.partition("@")[0]
        if password is None or username not in (local, ev.origin.bare):
            # §3.3: username must be the user's own; both fields are required.
            raise StanzaError("bad-request", "username and password of this account")
        if not password or len(password) > MAX_PASSWORD:
            raise StanzaError("not-acceptable", "Empty or overlong password")
        result = await host.bus.fire("account/password/set", PasswordChange(
            ev.origin.bare, password, f"xmpp:{ev.origin.full}"))
        if result is None:
            raise StanzaError("service-unavailable", "Password change is not available")
        if isinstance(result, Refused):
            # XEP-0077 §3.3: a password the policy refuses is not-acceptable.
            raise StanzaError("not-acceptable", result.reason)
        return iq_result(ev.stanza)
    return handler


def register(host: Host) -> None:
    host.add_feature(NS)
    handler = _set(host)
    for scope in ("self", "host"):
        host.bus.on(f"iq/{scope}/get/{QUERY}", get)
        host.bus.on(f"iq/{scope}/set/{QUERY}", handler)
