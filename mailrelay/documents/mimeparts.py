"""Byte-exact MIME writing and splitting for sealed documents.

S/MIME signatures cover the exact bytes of a MIME entity, so we neither build nor take
apart signed entities with the ``email`` package (its generator re-folds headers). Here
everything is bytes with CRLF line endings (RFC 5322 §2.1, RFC 8551 §3.1.1 canonical form).
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import email.utils
import functools
import re
import secrets
from email.message import EmailMessage, Message
from urllib.parse import quote

CRLF = b"\r\n"
_FAST_PARSER = email.parser.BytesParser(policy=email.policy.compat32)
MAX_LINE = 78  # RFC 5322 §2.1.1: lines SHOULD be no more than 78 characters
_ENCODED_WORD_BYTES = 45  # 45 bytes -> 60 base64 chars; with "=?utf-8?b?" "?=" <= 75
_PLAIN_PARAM = re.compile(r"[A-Za-z0-9._()+-]+(?: [A-Za-z0-9._()+-]+)*")


def new_boundary() -> str:
    # "=_" cannot occur in base64 or quoted-printable output (RFC 2046 §5.1.1 advice).
    return "=_cx_" + secrets.token_hex(12)


def normalize_crlf(data: bytes) -> bytes:
    """Turn bare LF (a message stored by a Unix tool) into CRLF; CRLF stays untouched."""
    # Line breaks (CRLF, lone CR, lone LF: bytes.splitlines) minus CRs = lone LFs; two
    # C passes, about twice as fast as counting b"\r\n" (a two-byte search).
    breaks = len(data.splitlines())
    if data and data[-1] not in b"\r\n":
        breaks -= 1  # the last line has no line break
    if breaks == data.count(b"\r"):
        return data  # already canonical: the common case
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def encode_words(text: str, first_room: int = MAX_LINE) -> str:
    """RFC 2047 §2 B-encoded words for non-ASCII text, each holding whole characters (§5).

    ``first_room`` is how many characters are left on the line of the first word.
    """
    words: list[str] = []
    chunk = b""
    limit = min(_ENCODED_WORD_BYTES, max(6, (first_room - 13) // 4 * 3))
    for char in text:
        raw = char.encode("utf-8")
        if len(chunk) + len(raw) > limit:
            words.append(_word(chunk))
            chunk = b""
            limit = _ENCODED_WORD_BYTES
        chunk += raw
    if chunk:
        words.append(_word(chunk))
    return " ".join(words)


def _word(raw: bytes) -> str:
    return "=?utf-8?b?" + base64.b64encode(raw).decode("ascii") + "?="


def unstructured(text: str, name: str = "") -> str:
    """A header value for free text: as is when ASCII, else RFC 2047 encoded words.

    Pass the field ``name`` so the first encoded word fits on the field's first line.
    """
    if text.isascii() and "=?" not in text:
        return " ".join(text.split())  # no CR/LF smuggling into the header block
    return encode_words(" ".join(text.split()), MAX_LINE - len(name) - 2)


def text_header(name: str, text: str) -> bytes:
    """An unstructured header field (Subject, X-CX-Doc-Number), encoded and folded."""
    return header(name, unstructured(text, name))


def mailbox(address: str, display_name: str | None = None) -> str:
    """``address`` with an optional (possibly Chinese) display name, RFC 5322 §3.4."""
    if not address.isascii() or any(c in address for c in "<>\r\n ,"):
        raise ValueError(f"not a plain ASCII address: {address!r}")
    if not display_name:
        return address
    if display_name.isascii():
        escaped = display_name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}" <{address}>'
    return f"{encode_words(display_name, MAX_LINE - 8)} <{address}>"


def header(name: str, value: str) -> bytes:
    """One header field, folded at white space to stay within 78 characters (RFC 5322 §2.2.3)."""
    if not value.isascii() or "\r" in value or "\n" in value:
        raise ValueError(f"header {name} must be ASCII on one line (encode it first)")
    out: list[str] = []
    line = name + ":"
    for token in value.split(" "):
        if line != name + ":" and len(line) + 1 + len(token) > MAX_LINE:
            out.append(line)
            line = " " + token  # folding: CRLF followed by white space
        else:
            line += " " + token
    out.append(line)
    return "\r\n".join(out).encode("ascii") + CRLF


def rfc2231_param(name: str, value: str) -> str:
    """``name="value"`` when ASCII, else RFC 2231 §4 ``name*=utf-8''%XX..`` (split by §3)."""
    if _PLAIN_PARAM.fullmatch(value):
        return f'{name}="{value}"'
    encoded = quote(value.encode("utf-8"), safe="")
    if len(encoded) <= 50:
        return f"{name}*=utf-8''{encoded}"
    pieces: list[str] = []
    start = 0
    index = 0
    while start < len(encoded):
        end = min(start + 50, len(encoded))
        if end < len(encoded):  # never split a %XX triplet (RFC 2231 §4)
            if encoded[end - 1] == "%":
                end -= 1
            elif encoded[end - 2] == "%":
                end -= 2
        prefix = "utf-8''" if index == 0 else ""
        pieces.append(f"{name}*{index}*={prefix}{encoded[start:end]}")
        start = end
        index += 1
    return "; ".join(pieces)


def base64_body(data: bytes) -> bytes:
    """Base64 in 76-character lines (RFC 2045 §6.8), each ending in CRLF."""
    if not data:
        return b""
    # encodebytes writes 76-character lines ending in LF; C speed, then LF -> CRLF.
    return base64.encodebytes(data).replace(b"\n", CRLF)


def split_head(entity: bytes) -> tuple[bytes, int]:
    """(header block, where the body starts) of a CRLF entity: :func:`split_entity`
    without copying the body (a 100 KB document)."""
    if entity.startswith(CRLF):
        return b"", 2
    end = entity.find(b"\r\n\r\n")
    if end < 0:
        return entity, len(entity)
    return entity[:end + 2], end + 4


def split_entity(entity: bytes) -> tuple[bytes, bytes]:
    """(header block including its final CRLF, body) of a CRLF entity (RFC 5322 §2.1)."""
    if entity.startswith(CRLF):
        return b"", entity[2:]
    end = entity.find(b"\r\n\r\n")
    if end < 0:
        return entity, b""
    return entity[:end + 2], entity[end + 4:]


def header_block(entity: bytes) -> bytes:
    """``split_entity(entity)[0]`` without copying the body."""
    return split_head(entity)[0]


def parse_headers(header_block: bytes) -> EmailMessage:
    """Header fields decoded (RFC 2047) as an EmailMessage, for reading, never writing."""
    parser = email.parser.BytesParser(policy=email.policy.default)
    msg = parser.parsebytes(header_block + CRLF, headersonly=True)
    assert isinstance(msg, EmailMessage)
    return msg


def read_headers(header_block: bytes) -> Message:
    """Raw header fields (no RFC 2047 decoding): 10x cheaper than :func:`parse_headers`;
    enough for Content-Type parameters and addresses on the verification path.

    The verifier reads the same few header blocks several times per message (outer
    fields, From, the seal's Content-Type), so answers are kept for the last blocks
    seen; treat the result as read-only."""
    if len(header_block) > _MEMO_MAX_BLOCK:
        return _parse_header_block(header_block)
    return _read_headers_memo(header_block)


_MEMO_MAX_BLOCK = 16 * 1024


def _parse_header_block(header_block: bytes) -> Message:
    return _FAST_PARSER.parsebytes(header_block + CRLF, headersonly=True)


_read_headers_memo = functools.lru_cache(maxsize=64)(_parse_header_block)


# One field with its continuation lines (RFC 5322 §2.2.3), its name as the feedparser's
# headerRE takes it (printable, no colon; never "From "), its value as compat32 keeps it.
_FIELD = re.compile(r"([!-9;-~]+):[ \t]*([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)\r\n")


class HeaderFields:
    """The header fields of a plain block, read the way ``email``'s compat32 parser reads
    them (same first-match ``get``, same Content-Type and parameter rules), without it.

    Only made by :func:`fields` for blocks the two read identically: ASCII, every line a
    ``name:`` field or its continuation, no RFC 2231 parameters; anything else goes to
    the ``email`` package. Read-only.
    """

    __slots__ = ("_fields",)

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._fields = items  # (lower-case name, value as compat32 gives it)

    def get(self, name: str, failobj: str | None = None) -> str | None:
        name = name.lower()
        for key, value in self._fields:
            if key == name:
                return value
        return failobj

    def get_all(self, name: str) -> list[str] | None:
        name = name.lower()
        found = [value for key, value in self._fields if key == name]
        return found or None

    def get_content_type(self) -> str:
        # RFC 2045 §5.2: default text/plain; a value without exactly one "/" is invalid.
        value = self.get("content-type")
        if value is None:
            return "text/plain"
        ctype = value.split(";", 1)[0].strip().lower()
        return ctype if ctype.count("/") == 1 else "text/plain"

    def get_param(self, param: str, failobj: str | None = None,
                  header: str = "content-type") -> str | None:
        value = self.get(header)
        if value is None:
            return failobj
        param = param.lower()
        for name, val in _params(value)[1:]:
            if name.lower() == param:
                return email.utils.unquote(val)
        return failobj


def _params(value: str) -> list[tuple[str, str]]:
    """RFC 2045 §5.1 parameters split as ``email.message._parseparam`` splits them
    (";" outside quoted strings), as (name, raw value)."""
    out: list[tuple[str, str]] = []
    rest = ";" + value
    while rest[:1] == ";":
        rest = rest[1:]
        end = rest.find(";")
        while end > 0 and (rest.count('"', 0, end) - rest.count('\\"', 0, end)) % 2:
            end = rest.find(";", end + 1)
        if end < 0:
            end = len(rest)
        item = rest[:end]
        name, eq, val = item.partition("=")
        out.append((name.strip().lower(), val.strip()) if eq else (item.strip(), ""))
        rest = rest[end:]
    return out


def fields(header_block: bytes) -> HeaderFields | Message:
    """The header fields of a block: :class:`HeaderFields` when the block is plain (the
    usual case: ~10x cheaper), else the ``email`` package's reading (:func:`read_headers`).
    Kept for the last blocks seen, like :func:`read_headers`."""
    if len(header_block) > _MEMO_MAX_BLOCK:
        return _read_fields(header_block)
    return _fields_memo(header_block)


def _read_fields(header_block: bytes) -> HeaderFields | Message:
    if not header_block.isascii():
        return read_headers(header_block)
    text = header_block.decode("ascii")
    items: list[tuple[str, str]] = []
    pos = 0
    for match in _FIELD.finditer(text):
        if match.start() != pos:
            # A line that is neither a field nor a continuation (the feedparser ends the
            # header there), a continuation first, a lone CR or LF: the email package.
            return read_headers(header_block)
        items.append((match.group(1).lower(), match.group(2)))
        pos = match.end()
    if pos != len(text):
        return read_headers(header_block)
    for name, value in items:
        if name in _PARAM_FIELDS and "*" in value and any(
                "*" in pname for pname, _ in _params(value)[1:]):
            return read_headers(header_block)  # RFC 2231: the email package decodes it
    return HeaderFields(items)


_PARAM_FIELDS = frozenset({"content-type", "content-disposition"})
_fields_memo = functools.lru_cache(maxsize=64)(_read_fields)


@functools.lru_cache(maxsize=1024)
def parse_address(value: str) -> tuple[str, str]:
    """``email.utils.parseaddr``, kept per value (a unit's From repeats on every document)."""
    return email.utils.parseaddr(value)


@functools.lru_cache(maxsize=1024)
def mailboxes(value: str) -> tuple[tuple[str, str], ...]:
    """``email.utils.getaddresses`` of one field value, kept per value."""
    return tuple(email.utils.getaddresses([value]))


def clear_memos() -> None:
    """Forget the header blocks seen (benchmarks: every arriving message is new)."""
    _read_headers_memo.cache_clear()
    _fields_memo.cache_clear()


def clear_address_caches() -> None:
    """Forget the addresses parsed (benchmarks: a cold start)."""
    parse_address.cache_clear()
    mailboxes.cache_clear()


def split_multipart(body: bytes, boundary: str, begin: int = 0) -> list[bytes]:
    """The exact bytes of each body part (RFC 2046 §5.1.1); ``begin``: where the body
    starts in ``body`` (a whole entity need not be copied to split its body).

    The CRLF before a delimiter line belongs to the delimiter, not to the part, so the
    bytes returned are precisely what an S/MIME signer signed.
    """
    return [body[start:end] for start, end in multipart_spans(body, boundary, begin)]


def multipart_spans(body: bytes, boundary: str, begin: int = 0) -> list[tuple[int, int]]:
    """Where each body part is in ``body`` (start, end): :func:`split_multipart` without
    copying the parts (ValueError for a broken multipart, all the same)."""
    delim = b"--" + boundary.encode("ascii")
    if body.startswith(delim, begin):
        pos = begin
    else:
        found = _find_delimiter(body, delim, begin)
        if found < 0:
            raise ValueError("multipart body without a boundary delimiter")
        pos = found + 2
    parts: list[tuple[int, int]] = []
    while True:
        after = pos + len(delim)
        if body[after:after + 2] == b"--":
            return parts  # close-delimiter; the epilogue is ignored
        eol = body.find(CRLF, after)
        if eol < 0:
            raise ValueError("truncated multipart body")
        start = eol + 2
        nxt = _find_delimiter(body, delim, start - 2)
        if nxt < 0:
            raise ValueError("multipart body without a close delimiter")
        parts.append((start, max(start, nxt)))
        pos = nxt + 2


def split_head_in(data: bytes, start: int, end: int) -> tuple[bytes, int]:
    """:func:`split_head` of the entity ``data[start:end]``; the body starts at the
    returned index of ``data``."""
    if data.startswith(CRLF, start, end):
        return b"", start + 2
    found = data.find(b"\r\n\r\n", start, end)
    if found < 0:
        return data[start:end], end
    return data[start:found + 2], found + 4


def _find_delimiter(body: bytes, delim: bytes, start: int) -> int:
    """Index of the CRLF that starts a delimiter line for ``delim``, or -1."""
    needle = CRLF + delim
    while True:
        idx = body.find(needle, start)
        if idx < 0:
            return -1
        tail = body[idx + len(needle):idx + len(needle) + 2]
        # The boundary must be followed by "--", padding white space, or the line end.
        if tail[:2] == b"--" or tail[:1] in (b"\r", b" ", b"\t") or tail == b"":
            return idx
        start = idx + 1
