"""Checks on what a client sends once authenticated (RFC 6120 §7, §8). Pure functions.

``vet_stanza`` stamps 'from', normalises 'to' and validates the stanza's shape; it returns
what the session must do: close with a StreamError, answer with an Element (an error or
the legacy session result) without routing, ``Verdict.ROUTE`` the (amended) stanza, or
``Verdict.DROP`` it (an invalid error stanza, which is never answered).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from xml.etree.ElementTree import Element

from ..jid import JID, JIDError, parse_jid, resourceprep
from . import ns
from .errors import StanzaError, StreamError, error_reply, is_error_stanza

IQ_TYPES = frozenset({"get", "set", "result", "error"})
PRESENCE_TYPES = frozenset({"unavailable", "subscribe", "subscribed", "unsubscribe",
                            "unsubscribed", "probe", "error"})
_RESOURCE = ns.q(ns.BIND, "resource")


class Verdict(Enum):
    ROUTE = "route"
    DROP = "drop"


def _answer(stanza: Element, error: StanzaError, from_: str | None = None) -> Element | Verdict:
    # RFC 6120 §8.3.1: an error stanza is never answered with another error.
    return Verdict.DROP if is_error_stanza(stanza) else error_reply(stanza, error, from_=from_)


def bind_request(iq: Element, new_resource: Callable[[], str]) -> tuple[str, bool] | StanzaError:
    """The resource asked for in a bind iq, resourceprep'd, and whether the server made it
    up with `new_resource` (RFC 6120 §7.6: none requested); or the error to answer
    (§7.7.2.1 bad-request)."""
    if not iq.get("id"):
        return StanzaError("bad-request", "Missing 'id'")
    bind = iq.find(ns.BIND_TAG)
    res_el = bind.find(_RESOURCE) if bind is not None else None
    text = (res_el.text or "").strip() if res_el is not None else ""
    if not text:
        return new_resource(), True
    try:
        return resourceprep(text), False
    except JIDError:
        return StanzaError("bad-request", "Invalid resource")


def vet_stanza(el: Element, jid: JID, domain: str) -> StreamError | Element | Verdict:
    """Validate a stanza from the client bound as `jid` (see module docstring)."""
    full = str(jid)
    sender = el.get("from")
    if sender is not None and sender != full:
        # RFC 6120 §8.1.2.1: the server stamps 'from'; another JID is spoofing.
        try:
            claimed: JID | None = parse_jid(sender)
        except JIDError:
            claimed = None
        if claimed != jid and claimed != jid.bare:
            return StreamError("invalid-from")  # RFC 6120 §4.9.3.9
    el.set("from", full)
    stype = el.get("type")
    to = el.get("to")
    if to is not None:
        try:
            to_norm = str(parse_jid(to))
        except JIDError:
            # RFC 6120 §8.3.3.8: jid-malformed, answered by the server itself.
            return _answer(el, StanzaError("jid-malformed"), from_=domain)
        if to_norm != to:
            el.set("to", to_norm)
    tag = el.tag
    if tag == ns.IQ:
        if stype not in IQ_TYPES or not el.get("id"):
            return _answer(el, StanzaError("bad-request"))  # RFC 6120 §8.2.3
        if stype in ("get", "set"):
            if len(el) != 1:  # RFC 6120 §8.2.3: exactly one payload child
                return _answer(el, StanzaError("bad-request"))
            child = el[0].tag
            if child == ns.SESSION_TAG and (to is None or to == domain):
                # RFC 6121 Appendix E: session establishment is a no-op.
                return Element(ns.IQ, {"type": "result", "id": el.get("id", ""), "to": full})
            if child == ns.BIND_TAG:
                return _answer(el, StanzaError("not-allowed", "Already bound"))
    elif tag == ns.PRESENCE and stype is not None and stype not in PRESENCE_TYPES:
        return _answer(el, StanzaError("bad-request"))
    # RFC 6121 §5.2.2: a message of unknown type is treated as 'normal'; routed as is.
    return Verdict.ROUTE
