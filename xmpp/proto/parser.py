"""Incremental, restricted XML stream parser (RFC 6120 §4, §11). Sans-IO, expat-based.

Feed bytes split at any boundary; get back StreamOpened, StanzaReceived (an
``xml.etree.ElementTree.Element`` with Clark-notation tags), StreamClosed, or one final
StreamFailed carrying the stream error to send. After StreamFailed the parser is dead.

Restricted XML (RFC 6120 §11.1): a DTD, entity declarations, entity references other than
the five predefined ones, comments and processing instructions end the stream with
``restricted-xml``. Since a DTD is refused at its first byte, no entity is ever declared,
so billion-laughs style expansion cannot happen. Depth and stanza size are limited
(``policy-violation``). ``reset()`` starts a fresh XML document, as needed after STARTTLS
(RFC 6120 §5.4.3.3) and SASL success (§6.4.6).

Bounds (ARCHITECTURE rule 15): the bytes of the current top-level element are counted
from its first byte, start tag included, in every state: before the stream header, between
stanzas (an unfinished ``<message x='AAAA…`` never closed), inside a stanza. Above
``max_stanza_bytes`` the stream fails with ``policy-violation``. A single unfinished token
(a start tag, an attribute value) is also bounded (``max_token_bytes``): expat re-parses an
unfinished token from its start on every feed (CVE-2023-52425), so bounding the token
bounds that cost to ``max_token_bytes`` per feed. Where expat has reparse deferral
(expat >= 2.6 with Python's ``SetReparseDeferralEnabled``) it is switched *off*: an
interactive stream must see each stanza when its last byte arrives, and our bound already
makes the re-parse cost moot.

State is per stream only: no process-wide tables, counters or sweeps. Memory: an expat
parser costs ~12 KiB, the largest part of an idle session; the driver may call
``release()`` on a stream that has been idle for a while (it owns the clock): between
stanzas the parser is dropped, and the next bytes rebuild one, primed with the saved
stream header so that its namespace declarations still apply.
"""

from __future__ import annotations

import xml.parsers.expat as expat
from xml.etree.ElementTree import Element

from . import ns
from .errors import StreamError
from .events import ParserEvent, StanzaReceived, StreamClosed, StreamFailed, StreamOpened

_SLICE = 16384  # bytes parsed between size checks, bounding memory of an unfinished stanza
_TABLE_MAX = 2000  # names cached per stream (expat's intern table and our Clark cache)
MAX_TOKEN = 16384  # bytes of one unfinished token (start tag, attribute value)
_NO_DECLS: dict[str, str] = {}  # `_header_ns` once the header is read; never written
_WHITESPACE = " \t\r\n"
_WS = b" \t\r\n"
_RESTED: list[tuple[int, str]] = []  # `_marks` of a parser rebuilt at rest; never appended
_ERR = expat.errors
_RESTRICTED_CODES = frozenset(
    _ERR.codes[m] for m in (
        _ERR.XML_ERROR_UNDEFINED_ENTITY, _ERR.XML_ERROR_RECURSIVE_ENTITY_REF,
        _ERR.XML_ERROR_ASYNC_ENTITY, _ERR.XML_ERROR_BINARY_ENTITY_REF,
        _ERR.XML_ERROR_ATTRIBUTE_EXTERNAL_ENTITY_REF, _ERR.XML_ERROR_EXTERNAL_ENTITY_HANDLING,
        _ERR.XML_ERROR_ENTITY_DECLARED_IN_PE, _ERR.XML_ERROR_NOT_STANDALONE,
        getattr(_ERR, "XML_ERROR_AMPLIFICATION_LIMIT_BREACH", _ERR.XML_ERROR_UNDEFINED_ENTITY),
    )
)
_ENCODING_CODES = frozenset(
    _ERR.codes[m] for m in (_ERR.XML_ERROR_UNKNOWN_ENCODING, _ERR.XML_ERROR_INCORRECT_ENCODING)
)


def _restricted(what: str) -> StreamError:
    return StreamError("restricted-xml", f"{what} not allowed (RFC 6120 §11.1)")


class StreamParser:
    """One XML stream from one peer. Not thread-safe; one per connection.

    `content_ns` is the expected default namespace (``jabber:client`` for c2s);
    `max_stanza_bytes` may be changed at any time (smaller before authentication).
    """

    __slots__ = ("content_ns", "max_stanza_bytes", "max_depth", "max_token_bytes", "_names",
                 "_intern", "_p", "_primer", "_depth", "_stack", "_events", "_marks",
                 "_header_ns", "_stanza_start", "_progress", "_fed", "_chunk", "_chunk_base",
                 "_dead")

    def __init__(self, *, content_ns: str = ns.CLIENT, max_stanza_bytes: int = 65536,
                 max_depth: int = 48, max_token_bytes: int = MAX_TOKEN) -> None:
        self.content_ns = content_ns
        self.max_stanza_bytes = max_stanza_bytes
        self.max_depth = max_depth
        self.max_token_bytes = max_token_bytes
        self._names: dict[str, str] = {}
        self._intern: dict[str, str] = {}
        self._dead = False
        self.reset()

    # -- public API -------------------------------------------------------------------

    def reset(self) -> None:
        """Start a new XML document (stream restart); unparsed state is dropped."""
        self._p: expat.XMLParserType | None = None  # made by the next feed
        self._primer = b""    # the stream header, to re-open the stream in a new parser
        self._depth = 0
        self._stack: list[Element] = []
        self._events: list[ParserEvent] = []
        self._marks: list[tuple[int, str]] = []  # per event: end position, tag
        self._header_ns: dict[str, str] = {}
        self._stanza_start = 0  # where the current top-level element began (or may begin)
        self._progress = 0      # where the last token expat reported began
        self._fed = 0
        self._chunk = b""
        self._chunk_base = 0
        self._dead = False

    def _new_expat(self) -> expat.XMLParserType:
        # The encoding is forced to UTF-8 (RFC 6120 §11.6) and namespaces are reported as
        # "uri}local", the same trick ElementTree uses, so "{" + name is Clark notation.
        if len(self._intern) > _TABLE_MAX:
            self._intern = {}
        p = expat.ParserCreate("UTF-8", "}", intern=self._intern)
        if hasattr(p, "SetReparseDeferralEnabled"):  # expat >= 2.6: see module docstring
            p.SetReparseDeferralEnabled(False)
        p.buffer_text = True
        p.buffer_size = 1024  # per stream (RSS); longer text arrives in pieces, joined in _data
        p.ordered_attributes = False
        p.specified_attributes = True
        p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        if self._primer:
            # Re-open the stream (no handlers yet: no second StreamOpened); the bytes that
            # follow are parsed at depth 1 under the header's namespace declarations.
            p.Parse(self._primer, False)
            self._fed = self._stanza_start = self._progress = len(self._primer)
        else:
            p.StartNamespaceDeclHandler = self._ns_decl
            p.XmlDeclHandler = self._xml_decl
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._data
        p.StartDoctypeDeclHandler = self._doctype
        p.EntityDeclHandler = self._entity_decl
        p.CommentHandler = self._comment
        p.ProcessingInstructionHandler = self._pi
        p.SkippedEntityHandler = self._skipped_entity
        p.ExternalEntityRefHandler = self._external_entity
        self._p = p
        return p

    def _at_rest(self) -> bool:
        """Between stanzas with nothing but whitespace after the last one, so expat holds
        no partial token and a primed parser can take over; or dead. Looks at the last
        chunk that was not just whitespace."""
        if self._dead:
            return True
        marks = self._marks
        if self._depth != 1 or not marks:
            return marks is _RESTED and self._depth == 1
        mark, tag = marks[-1]
        if not tag:  # the stream header or a failure: no stanza yet
            return False
        data = self._chunk
        pos = mark - self._chunk_base
        # At depth 1 a complete end tag after an empty element would have closed the
        # stream, so a complete end tag at the mark is the stanza's own.
        if pos < 0:  # the end tag began in an earlier chunk
            gt = data.find(b">")
        elif data.startswith(b"</", pos):
            gt = data.find(b">", pos)
        else:  # an empty-element tag: reported just after its "/>"
            gt = pos - 1
        return gt >= 0 and not data[gt + 1:].strip(_WS)

    def release(self) -> bool:
        """Drop the expat parser if nothing would be lost (see ``_at_rest``); the driver
        calls this for a stream idle for a while. True if released (or none was held)."""
        if self._p is None:
            return True
        if not self._at_rest():
            return False
        self._p = None
        self._chunk = b""
        self._chunk_base = 0
        self._marks = _RESTED
        return True

    @property
    def depth(self) -> int:
        """Open elements, counting the stream element (0 before the header)."""
        return self._depth

    def feed(self, data: bytes) -> list[ParserEvent]:
        """Parse `data` and return the events it completed, in order."""
        if self._fed == 0:
            # Whitespace before a (restarted) stream is a keepalive of the previous one;
            # XML would refuse it before the declaration (XML 1.0 §2.8).
            data = data.lstrip(b" \t\r\n")
        if self._dead or not data:
            return []
        p = self._p
        if p is None:
            p = self._new_expat()
        prev = self._chunk, self._chunk_base, self._marks
        self._chunk = data
        self._chunk_base = self._fed
        self._marks = []
        try:
            if len(data) <= _SLICE:
                self._fed += len(data)
                p.Parse(data, False)
            else:
                for i in range(0, len(data), _SLICE):
                    piece = data[i:i + _SLICE]
                    self._fed += len(piece)
                    p.Parse(piece, False)
                    self._check_pending_size()
            self._check_pending_size()
        except StreamError as exc:
            self._fail(exc)
        except expat.ExpatError as exc:
            self._fail(self._error_from_expat(exc))
        except RecursionError:  # pragma: no cover - depth is limited well below this
            self._fail(StreamError("policy-violation", "Nesting too deep"))
        events = self._events
        self._events = []
        if not events and not self._dead and not data.strip(_WS):
            # A keepalive: what `_at_rest` looks at is still the chunk before it. Between
            # stanzas it starts no element, so it does not count against the next one.
            self._chunk, self._chunk_base, self._marks = prev
            if self._depth == 1 and self._at_rest():
                self._stanza_start = self._progress = self._fed
        return events

    def remainder_after(self, index: int) -> bytes:
        """Bytes of the last ``feed`` chunk that follow the element that completed event
        number `index` of the list it returned: what must be re-parsed as a new document
        when that element triggered a stream restart (RFC 6120 §6.4.6 pipelining)."""
        mark, tag = self._marks[index]
        if mark < 0:
            return b""
        data = self._chunk
        pos = mark - self._chunk_base
        # expat reports an end tag at its "</", but an empty-element tag just after its
        # "/>": then the mark may sit on the *next* end tag (the stream's), with another name.
        if pos >= 0:
            if not data.startswith(b"</", pos):
                return data[pos:]
            end = pos + 2
            while end < len(data) and data[end] not in b" \t\r\n>":
                end += 1
            local = tag.rpartition("}")[2].encode("utf-8")
            if data[pos + 2:end].rpartition(b":")[2] != local:
                return data[pos:]
        gt = data.find(b">", max(pos, 0))  # an end tag holds no quoted ">"
        return data[gt + 1:] if gt >= 0 else b""

    # -- errors -----------------------------------------------------------------------

    def _fail(self, error: StreamError) -> None:
        self._dead = True
        self._events.append(StreamFailed(error))
        self._marks.append((-1, ""))

    def _error_from_expat(self, exc: expat.ExpatError) -> StreamError:
        if exc.code in _RESTRICTED_CODES:
            return _restricted("Entity reference")
        if exc.code in _ENCODING_CODES:
            return StreamError("unsupported-encoding", "Only UTF-8 is allowed")
        return StreamError("not-well-formed", "XML is not well-formed")

    def _check_pending_size(self) -> None:
        # Every state counts: the header not yet complete (depth 0), an element not yet
        # started or whose start tag is unfinished (depth 1), a stanza (depth > 1).
        fed = self._fed
        if fed - self._stanza_start > self.max_stanza_bytes:
            raise StreamError("policy-violation", "Stanza too large")
        if fed - self._progress > self.max_token_bytes:
            raise StreamError("policy-violation", "Tag too large")

    # -- expat handlers ---------------------------------------------------------------

    def _clark(self, name: str) -> str:
        tag = "{" + name if "}" in name else name
        if len(self._names) >= _TABLE_MAX:
            self._names.clear()
        self._names[name] = tag
        return tag

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        depth = self._depth
        here = self._p.CurrentByteIndex  # type: ignore[union-attr]  # in Parse
        self._progress = here
        if depth == 0:
            self._open_stream(name, attrs)
            return
        if depth == 1:
            self._stanza_start = here
        elif depth >= self.max_depth:
            raise StreamError("policy-violation", "Nesting too deep")
        tag = self._names.get(name) or self._clark(name)
        if attrs:
            for key in attrs:
                if "}" in key:
                    attrs = {("{" + k if "}" in k else k): v for k, v in attrs.items()}
                    break
            el = Element(tag, attrs)
        else:
            el = Element(tag)
        if depth > 1:
            self._stack[-1].append(el)
        self._stack.append(el)
        self._depth = depth + 1

    def _end(self, name: str) -> None:
        depth = self._depth - 1
        self._depth = depth
        if depth > 1:
            self._stack.pop()
        elif depth == 1:
            el = self._stack.pop()
            mark = self._p.CurrentByteIndex  # type: ignore[union-attr]
            if mark - self._stanza_start > self.max_stanza_bytes:
                raise StreamError("policy-violation", "Stanza too large")
            self._stanza_start = self._progress = mark  # the next element starts after it
            self._events.append(StanzaReceived(el))
            self._marks.append((mark, el.tag))
        else:
            self._events.append(StreamClosed())
            self._marks.append((-1, ""))

    def _data(self, text: str) -> None:
        here = self._p.CurrentByteIndex  # type: ignore[union-attr]
        if here > self._progress:
            self._progress = here
        if self._depth > 1:
            el = self._stack[-1]
            if len(el):
                last = el[-1]
                last.tail = text if last.tail is None else last.tail + text
            else:
                el.text = text if el.text is None else el.text + text
        elif text.strip(_WHITESPACE):
            # RFC 6120 §11.7: only whitespace (e.g. keepalives, §4.6.1) between stanzas.
            raise StreamError("bad-format", "Text is not allowed between stanzas")

    def _ns_decl(self, prefix: str | None, uri: str) -> None:
        if self._depth == 0:
            self._header_ns[prefix or ""] = uri

    def _open_stream(self, name: str, attrs: dict[str, str]) -> None:
        tag = self._clark(name)
        if tag != ns.STREAM:
            if tag.endswith("}stream") or tag == "stream":
                # RFC 6120 §4.8.1: the stream element MUST be qualified by the streams ns.
                raise StreamError("invalid-namespace", "Wrong stream namespace")
            raise StreamError("bad-format", "Expected <stream:stream>")
        # RFC 6120 §4.8.2: the content namespace is declared as the default namespace.
        if self._header_ns.get("") != self.content_ns:
            raise StreamError("invalid-namespace", "Wrong or missing content namespace")
        self._depth = 1
        # The header is complete; its bytes do not count against the first stanza.
        self._stanza_start = self._progress = self._header_end(
            self._p.CurrentByteIndex)  # type: ignore[union-attr]
        self._p.StartNamespaceDeclHandler = None  # type: ignore[union-attr]  # only the header counts
        self._primer = _primer(self._header_ns)
        self._header_ns = _NO_DECLS
        self._events.append(StreamOpened(
            to=attrs.get("to"), from_=attrs.get("from"), version=attrs.get("version"),
            lang=attrs.get(ns.XML + "}lang"), id=attrs.get("id"),
        ))
        self._marks.append((-1, ""))

    def _header_end(self, start: int) -> int:
        """Position just after the stream header's start tag that begins at `start` (the
        tag is complete: expat reported it). A header that began in an earlier chunk
        counts from the start of this one."""
        data, pos = self._chunk, start - self._chunk_base
        if pos < 0:
            return self._chunk_base
        quote = 0
        for i in range(pos, len(data)):
            c = data[i]
            if quote:
                if c == quote:
                    quote = 0
            elif c in (0x22, 0x27):
                quote = c
            elif c == 0x3E:  # ">"
                return self._chunk_base + i + 1
        return self._chunk_base  # pragma: no cover - expat saw the whole tag

    def _xml_decl(self, version: str | None, encoding: str | None, standalone: int) -> None:
        # RFC 6120 §11.6: the only allowed encoding is UTF-8.
        if encoding is not None and encoding.lower() not in ("utf-8", "utf8"):
            raise StreamError("unsupported-encoding", "Only UTF-8 is allowed")

    def _doctype(self, *args: object) -> None:
        raise _restricted("DTD")

    def _entity_decl(self, *args: object) -> None:
        raise _restricted("Entity declaration")

    def _comment(self, data: str) -> None:
        raise _restricted("Comment")

    def _pi(self, target: str, data: str) -> None:
        raise _restricted("Processing instruction")

    def _skipped_entity(self, name: str, is_parameter: int) -> None:
        raise _restricted("Entity reference")

    def _external_entity(self, *args: object) -> int:
        raise _restricted("External entity")


def _primer(decls: dict[str, str]) -> bytes:
    """A stream start tag with the namespace declarations (prefix → URI) of a header."""
    key = tuple(decls.items())
    # The header resolved to the streams namespace, so some prefix is bound to it.
    prefix = next((k for k, v in key if k and v == ns.STREAMS), "")
    attrs = "".join(f" xmlns{':' + k if k else ''}='{_escape(v)}'" for k, v in key)
    if not prefix:  # pragma: no cover - defensive
        prefix = "stream"
        attrs += f" xmlns:stream='{ns.STREAMS}'"
    return f"<{prefix}:stream{attrs}>".encode()


def _escape(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace("'", "&apos;")
