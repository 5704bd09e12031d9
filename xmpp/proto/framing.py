"""XMPP over WebSocket framing (RFC 7395), sans-IO: translates between WebSocket messages
(each one complete XML element, ``<open/>`` / ``<close/>`` instead of the stream tags)
and the byte stream the ``ServerSession`` core speaks, so the core runs unchanged.

- Client → core: ``<open/>`` becomes a ``<stream:stream>`` header (a stream restart after
  SASL is just another ``<open/>``, RFC 7395 §3.5), ``<close/>`` becomes
  ``</stream:stream>``, any other message must be exactly one element (§3.3.3) and is
  re-serialized, so nothing but that element reaches the core.
- Core → client: the header becomes ``<open/>``, ``</stream:stream>`` becomes
  ``<close/>``, each top-level element becomes one message carrying its own namespace
  declarations (§3.3.3).
"""

from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import Element, ParseError, XMLPullParser, fromstring

from . import ns
from .serializer import STREAM_CLOSE, escape_attr, stream_header, to_string

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
OPEN, CLOSE = f"{{{FRAMING}}}open", f"{{{FRAMING}}}close"
XML_LANG = f"{{{ns.XML}}}lang"
_HEADER = b"<stream:stream"


class FramingError(Exception):
    """A client message that is not one well-formed element (RFC 7395 §3.3.3)."""


def client_message(text: str) -> bytes:
    """Core input for one client WebSocket message."""
    try:
        el = fromstring(text)
    except ParseError as exc:
        raise FramingError(str(exc)) from None
    if el.tag == OPEN:
        # RFC 7395 §3.3.1: to, version (and xml:lang) carry over to the stream header.
        return stream_header(to=el.get("to"), version=el.get("version"),
                             lang=el.get(XML_LANG), xml_declaration=False)
    if el.tag == CLOSE:
        return STREAM_CLOSE
    if el.tag.startswith("{" + ns.STREAMS + "}"):
        raise FramingError("stream elements are framed by <open/> and <close/>")
    return to_string(el).encode("utf-8")


class ServerFramer:
    """Splits the core's output into WebSocket messages (text)."""

    def __init__(self) -> None:
        self._parser: XMLPullParser | None = None
        self._depth = 0

    def feed(self, data: bytes) -> list[str]:
        out: list[str] = []
        while data:
            at = data.find(_HEADER, 1)
            chunk, data = (data, b"") if at < 0 else (data[:at], data[at:])
            if chunk.lstrip().startswith((_HEADER, b"<?xml")):
                self._parser = XMLPullParser(events=("start", "end"))
                self._depth = 0
            if self._parser is None:
                continue  # nothing before a header is sent by the core
            self._parser.feed(chunk)
            out.extend(self._drain())
        return out

    def _drain(self) -> list[str]:
        assert self._parser is not None
        out: list[str] = []
        events: Any = self._parser.read_events()  # typeshed types it too loosely
        for event, el in events:
            assert isinstance(el, Element)
            if event == "start":
                self._depth += 1
                if self._depth == 1:  # the stream header
                    attrs = "".join(f' {("xml:lang" if k == XML_LANG else k)}="{escape_attr(v)}"'
                                    for k, v in el.items())
                    out.append(f'<open xmlns="{FRAMING}"{attrs}/>')
                continue
            self._depth -= 1
            if self._depth == 0:  # </stream:stream>
                out.append(f'<close xmlns="{FRAMING}"/>')
                self._parser = None
                break
            if self._depth == 1:
                out.append(_standalone(el))
                el.clear()
        return out


def _standalone(el: Element) -> str:
    """One element as its own document: namespaces declared on it (RFC 7395 §3.3.3)."""
    text = to_string(el, default_ns="")
    if el.tag.startswith("{" + ns.STREAMS + "}"):
        local = el.tag.partition("}")[2]
        text = text.replace(f"<stream:{local}",
                            f'<stream:{local} xmlns:stream="{ns.STREAMS}"', 1)
    return text
