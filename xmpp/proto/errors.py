"""Stream and stanza errors as values that carry their reply (RFC 6120 §4.9, §8.3).

Both are exceptions so they can be raised deep and caught once per stanza, but they are
also plain values: ``to_element()`` renders the XML to send, ``from_element()`` reads one
received from a peer. The public ``text`` must never leak configuration or internals.
"""

from __future__ import annotations

import copy
from xml.etree.ElementTree import Element, SubElement

from . import ns

#: RFC 6120 §4.9.3: defined stream error conditions.
STREAM_CONDITIONS = frozenset({
    "bad-format", "bad-namespace-prefix", "conflict", "connection-timeout", "host-gone",
    "host-unknown", "improper-addressing", "internal-server-error", "invalid-from",
    "invalid-namespace", "invalid-xml", "not-authorized", "not-well-formed",
    "policy-violation", "remote-connection-failed", "reset", "resource-constraint",
    "restricted-xml", "see-other-host", "system-shutdown", "undefined-condition",
    "unsupported-encoding", "unsupported-feature", "unsupported-stanza-type",
    "unsupported-version",
})

#: RFC 6120 §8.3.3: defined stanza error conditions and their usual error type.
STANZA_CONDITIONS: dict[str, str] = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "gone": "cancel",
    "internal-server-error": "cancel",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "redirect": "modify",
    "registration-required": "auth",
    "remote-server-not-found": "cancel",
    "remote-server-timeout": "wait",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "subscription-required": "auth",
    "undefined-condition": "cancel",
    "unexpected-request": "wait",
}

#: RFC 6120 §8.3.2: the 'type' attribute of an <error/> element.
STANZA_ERROR_TYPES = frozenset({"auth", "cancel", "continue", "modify", "wait"})

#: RFC 6120 §6.5: SASL failure conditions.
SASL_CONDITIONS = frozenset({
    "aborted", "account-disabled", "credentials-expired", "encryption-required",
    "incorrect-encoding", "invalid-authzid", "invalid-mechanism", "malformed-request",
    "mechanism-too-weak", "not-authorized", "temporary-auth-failure",
})


def _text_element(parent: Element, namespace: str, text: str, lang: str | None) -> None:
    el = SubElement(parent, ns.q(namespace, "text"))
    if lang:
        el.set(ns.XML_LANG, lang)
    el.text = text


class StreamError(Exception):
    """An unrecoverable stream-level error (RFC 6120 §4.9.1.1: the stream is closed after it).

    `content` is the character data of the condition element, used by ``see-other-host``
    (RFC 6120 §4.9.3.19) to carry the new host.
    """

    def __init__(self, condition: str, text: str | None = None, *, lang: str | None = "en",
                 content: str | None = None) -> None:
        if condition not in STREAM_CONDITIONS:
            raise ValueError(f"unknown stream error condition {condition!r}")
        super().__init__(condition if text is None else f"{condition}: {text}")
        self.condition = condition
        self.text = text
        self.lang = lang
        self.content = content

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StreamError):
            return NotImplemented
        return (self.condition, self.text, self.content) == (
            other.condition, other.text, other.content)

    def __hash__(self) -> int:
        return hash((self.condition, self.text, self.content))

    def __repr__(self) -> str:
        return f"StreamError({self.condition!r}, {self.text!r})"

    def to_element(self) -> Element:
        """``<stream:error><condition xmlns=...streams/><text/></stream:error>`` (§4.9.2)."""
        root = Element(ns.STREAM_ERROR)
        cond = SubElement(root, ns.q(ns.STREAM_ERRORS, self.condition))
        if self.content:
            cond.text = self.content
        if self.text:
            _text_element(root, ns.STREAM_ERRORS, self.text, self.lang)
        return root

    @classmethod
    def from_element(cls, element: Element) -> StreamError:
        """Read a received ``<stream:error/>``; unknown conditions map to
        ``undefined-condition`` (RFC 6120 §4.9.4: unknown children are ignored)."""
        condition, text, content = "undefined-condition", None, None
        prefix = "{" + ns.STREAM_ERRORS + "}"
        for child in element:
            if child.tag == prefix + "text":
                text = child.text or ""
            elif child.tag.startswith(prefix) and child.tag[len(prefix):] in STREAM_CONDITIONS:
                condition = child.tag[len(prefix):]
                content = child.text
        return cls(condition, text, content=content)


class StanzaError(Exception):
    """A stanza-level error (RFC 6120 §8.3): recoverable, answered with an error stanza.

    `type` defaults to the usual type of the condition (§8.3.3); `by` names the entity that
    generated the error (§8.3.2); `content` carries the redirect URI of ``gone``/``redirect``.
    """

    def __init__(self, condition: str, text: str | None = None, *, type: str | None = None,
                 by: str | None = None, lang: str | None = "en",
                 content: str | None = None) -> None:
        if condition not in STANZA_CONDITIONS:
            raise ValueError(f"unknown stanza error condition {condition!r}")
        etype = type or STANZA_CONDITIONS[condition]
        if etype not in STANZA_ERROR_TYPES:
            raise ValueError(f"unknown stanza error type {etype!r}")
        super().__init__(condition if text is None else f"{condition}: {text}")
        self.condition = condition
        self.type = etype
        self.text = text
        self.by = by
        self.lang = lang
        self.content = content

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StanzaError):
            return NotImplemented
        return (self.type, self.condition, self.text, self.by) == (
            other.type, other.condition, other.text, other.by)

    def __hash__(self) -> int:
        return hash((self.type, self.condition, self.text, self.by))

    def __repr__(self) -> str:
        return f"StanzaError({self.condition!r}, {self.text!r}, type={self.type!r})"

    def to_element(self) -> Element:
        """``<error type=... by=...><condition xmlns=...stanzas/><text/></error>`` (§8.3.2)."""
        root = Element(ns.ERROR, {"type": self.type})
        if self.by:
            root.set("by", self.by)
        cond = SubElement(root, ns.q(ns.STANZA_ERRORS, self.condition))
        if self.content:
            cond.text = self.content
        if self.text:
            _text_element(root, ns.STANZA_ERRORS, self.text, self.lang)
        return root

    @classmethod
    def from_element(cls, error: Element) -> StanzaError:
        """Read an ``<error/>`` child; unknown conditions become ``undefined-condition``."""
        condition, text, content = "undefined-condition", None, None
        prefix = "{" + ns.STANZA_ERRORS + "}"
        for child in error:
            if child.tag == prefix + "text":
                text = child.text or ""
            elif child.tag.startswith(prefix) and child.tag[len(prefix):] in STANZA_CONDITIONS:
                condition = child.tag[len(prefix):]
                content = child.text
        etype = error.get("type")
        if etype not in STANZA_ERROR_TYPES:
            etype = None
        return cls(condition, text, type=etype, by=error.get("by"), content=content)


class SaslFailure(Exception):
    """A SASL failure (RFC 6120 §6.5); the stream stays open and the client may retry."""

    def __init__(self, condition: str, text: str | None = None) -> None:
        if condition not in SASL_CONDITIONS:
            raise ValueError(f"unknown SASL failure condition {condition!r}")
        super().__init__(condition)
        self.condition = condition
        self.text = text

    def to_element(self) -> Element:
        """``<failure xmlns=...sasl><condition/><text/></failure>`` (RFC 6120 §6.4.5)."""
        root = Element(ns.SASL_FAILURE)
        SubElement(root, ns.q(ns.SASL, self.condition))
        if self.text:
            _text_element(root, ns.SASL, self.text, "en")
        return root


def is_error_stanza(stanza: Element) -> bool:
    """True for a stanza of type 'error', which MUST NOT be answered with another error
    (RFC 6120 §8.3.1)."""
    return stanza.get("type") == "error"


def error_reply(stanza: Element, error: StanzaError, *, include_original: bool = False,
                from_: str | None = None) -> Element:
    """Build the error stanza answering `stanza` (RFC 6120 §8.3.1).

    The reply has the same element name and 'id', type='error', 'to' and 'from' swapped
    (`from_` overrides the new 'from', e.g. the server's domain when the original 'to' was
    malformed). The original children are kept only when `include_original` is set (the
    RFC allows but does not require it; §8.2.3 for IQ). Raises ValueError for an error
    stanza, which must never be answered with an error.
    """
    if is_error_stanza(stanza):
        raise ValueError("never reply to an error stanza with an error (RFC 6120 §8.3.1)")
    attrs = {"type": "error"}
    sid = stanza.get("id")
    if sid is not None:
        attrs["id"] = sid
    sender = stanza.get("from")
    if sender is not None:
        attrs["to"] = sender
    new_from = from_ if from_ is not None else stanza.get("to")
    if new_from is not None:
        attrs["from"] = new_from
    lang = stanza.get(ns.XML_LANG)
    if lang is not None:
        attrs[ns.XML_LANG] = lang
    reply = Element(stanza.tag, attrs)
    if include_original:
        for child in stanza:
            if child.tag != ns.ERROR:
                reply.append(copy.deepcopy(child))
    reply.append(error.to_element())
    return reply
