"""Element → bytes in the context of an XMPP stream (RFC 6120 §4.8, §11).

The stream header declares the content namespace (``jabber:client``) as default and
``stream:`` for the streams namespace, so stanzas are written without any ``xmlns`` and
never with ``ns0:`` prefixes. A child in another namespace declares it as its own default
(``<request xmlns='urn:xmpp:receipts'/>``). Tags without a namespace inherit the enclosing
default namespace (handy for hand-built stanzas). ``jabber:client`` and ``jabber:server``
are interchangeable at the stream level: a stanza is written in the stream's namespace.

Per-tag work is cached, so the common stanzas take a few microseconds.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from xml.etree.ElementTree import Element

from . import ns

_TEXT_SPECIAL = re.compile("[&<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_ATTR_SPECIAL = re.compile("[&<>\"\t\n\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
            "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}


def _replace(match: re.Match[str]) -> str:
    # Characters XML 1.0 cannot carry at all (RFC 6120 §11.1 via XML §2.2) become U+FFFD.
    return _ESCAPES.get(match.group(), "\ufffd")


def escape_text(text: str) -> str:
    """Escape character data (``&``, ``<``, ``>``, CR) and replace illegal characters."""
    if _TEXT_SPECIAL.search(text) is None:
        return text
    return _TEXT_SPECIAL.sub(_replace, text)


def escape_attr(value: str) -> str:
    """Escape a double-quoted attribute value, keeping whitespace exactly."""
    if _ATTR_SPECIAL.search(value) is None:
        return value
    return _ATTR_SPECIAL.sub(_replace, value)


# (tag, context default namespace) -> ("<name[ xmlns=...]", "</name>", child default ns)
_TagInfo = tuple[str, str, str]
_TAGS: dict[tuple[str, str], _TagInfo] = {}


def _tag_info(tag: str, default_ns: str) -> _TagInfo:
    if tag[:1] != "{":
        info = ("<" + tag, "</" + tag + ">", default_ns)
    else:
        uri, _, local = tag[1:].partition("}")
        if uri == default_ns or (uri in ns.CONTENT_NAMESPACES
                                 and default_ns in ns.CONTENT_NAMESPACES):
            info = ("<" + local, "</" + local + ">", default_ns)
        elif uri == ns.STREAMS:
            # RFC 6120 §4.8.5: the "stream" prefix is declared on the stream header.
            info = ("<stream:" + local, "</stream:" + local + ">", default_ns)
        else:
            info = (f'<{local} xmlns="{escape_attr(uri)}"', "</" + local + ">", uri)
    if len(_TAGS) < 8192:
        _TAGS[(tag, default_ns)] = info
    return info


def _attr_name(key: str, decls: list[str]) -> str:
    uri, _, local = key[1:].partition("}")
    if uri == ns.XML:
        return "xml:" + local
    prefix = f"ns{len(decls)}"
    decls.append(f' xmlns:{prefix}="{escape_attr(uri)}"')
    return f"{prefix}:{local}"


def _write(el: Element, out: list[str], default_ns: str) -> None:
    tag = el.tag
    info = _TAGS.get((tag, default_ns)) or _tag_info(tag, default_ns)
    append = out.append
    append(info[0])
    decls: list[str] | None = None
    for key, value in el.items():
        if key[0] == "{":
            if decls is None:
                decls = []
            key = _attr_name(key, decls)
        append(f' {key}="{escape_attr(value)}"' if value else f' {key}=""')
    if decls:
        append("".join(decls))
    text = el.text
    if len(el):
        append(">")
        if text:
            append(escape_text(text))
        child_ns = info[2]
        for child in el:
            _write(child, out, child_ns)
            tail = child.tail
            if tail:
                append(escape_text(tail))
        append(info[1])
    elif text:
        append(">")
        append(escape_text(text))
        append(info[1])
    else:
        append("/>")


def to_string(el: Element, default_ns: str = ns.CLIENT) -> str:
    """Serialize `el` as text, as it would appear on a stream whose default namespace is
    `default_ns`. The element's own tail is not written."""
    out: list[str] = []
    _write(el, out, default_ns)
    return "".join(out)


def to_bytes(el: Element, default_ns: str = ns.CLIENT) -> bytes:
    """Serialize `el` as UTF-8 bytes for a stream (see ``to_string``)."""
    out: list[str] = []
    _write(el, out, default_ns)
    return "".join(out).encode("utf-8")


def stream_header(*, from_: str | None = None, to: str | None = None, id: str | None = None,
                  version: str | None = "1.0", lang: str | None = "en",
                  content_ns: str = ns.CLIENT, xml_declaration: bool = True) -> bytes:
    """The opening ``<stream:stream>`` tag (RFC 6120 §4.7), with the XML declaration
    (§11.5) unless told otherwise."""
    parts = ["<?xml version='1.0'?>" if xml_declaration else "",
             f'<stream:stream xmlns="{escape_attr(content_ns)}" xmlns:stream="{ns.STREAMS}"']
    for name, value in (("from", from_), ("to", to), ("id", id), ("version", version),
                        ("xml:lang", lang)):
        if value is not None:
            parts.append(f' {name}="{escape_attr(value)}"')
    parts.append(">")
    return "".join(parts).encode("utf-8")


STREAM_CLOSE = b"</stream:stream>"

Serializer = Callable[[Element], bytes]
