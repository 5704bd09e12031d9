"""Cursor over one complete command: lines and literal data (RFC 3501 §4, §9)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from .errors import ParseError
from .mutf7 import decode_mutf7
from .spool import Spool

__all__ = ["Cursor", "LITERAL_RE", "ATOM_CHARS", "ASTRING_CHARS", "LIST_CHARS"]

_CTL = {chr(c) for c in range(0x20)} | {"\x7f"}
_ATOM_SPECIALS = set('(){ %*"\\]') | _CTL
ATOM_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - _ATOM_SPECIALS
ASTRING_CHARS = ATOM_CHARS | {"]"}
LIST_CHARS = ATOM_CHARS | {"%", "*", "]"}
#: A literal marker at the end of a line: ``{12}``, ``{12+}`` (RFC 7888) or ``~{12}`` (RFC 3516).
LITERAL_RE = re.compile(rb"(~?)\{(\d{1,20})(\+?)\}$")
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]


class Cursor:
    """Reads tokens from ``chunks`` = [line, literal, line, literal, ..., line].

    Lines are ``str`` (latin-1 decoded, lossless); literals stay ``bytes`` (or a
    :class:`Spool` for a large APPEND literal, read only by :meth:`message_literal`).
    """

    __slots__ = ("lines", "literals", "idx", "pos", "tag", "binary_literal", "utf8")

    def __init__(self, chunks: list[bytes | Spool]) -> None:
        self.lines = [c.decode("latin-1") for c in chunks[0::2] if isinstance(c, bytes)]
        self.literals = chunks[1::2]
        self.idx = 0
        self.pos = 0
        self.tag: str | None = None
        self.binary_literal = False
        self.utf8 = False  # RFC 6855 UTF8=ACCEPT enabled: mailbox names are UTF-8

    # -- primitives ---------------------------------------------------------------
    @property
    def line(self) -> str:
        return self.lines[self.idx]

    def error(self, text: str, code: str | None = None) -> ParseError:
        return ParseError(text, self.tag, code)

    def peek(self) -> str:
        return self.line[self.pos] if self.pos < len(self.line) else ""

    def at_end(self) -> bool:
        return self.idx == len(self.lines) - 1 and self.pos >= len(self.line)

    def end(self) -> None:
        if not self.at_end():
            raise self.error("Unexpected extra arguments")

    def sp(self) -> None:
        if self.peek() != " ":
            raise self.error("Expected space")
        self.pos += 1

    def maybe_sp(self) -> bool:
        if self.peek() == " ":
            self.pos += 1
            return True
        return False

    def expect(self, ch: str) -> None:
        if self.peek() != ch:
            raise self.error(f"Expected {ch!r}")
        self.pos += 1

    def take(self, chars: frozenset[str] | set[str]) -> str:
        line, start = self.line, self.pos
        end = start
        n = len(line)
        while end < n and line[end] in chars:
            end += 1
        self.pos = end
        return line[start:end]

    def atom(self) -> str:
        a = self.take(ATOM_CHARS)
        if not a:
            raise self.error("Expected atom")
        return a

    def number(self) -> int:
        d = self.take(frozenset("0123456789"))
        if not d or len(d) > 20:
            raise self.error("Expected number")
        return int(d)

    def nz_number(self) -> int:
        n = self.number()
        if n == 0:
            raise self.error("Expected non-zero number")
        return n

    # -- strings ------------------------------------------------------------------
    def _literal(self) -> bytes:
        data = self._literal_any()
        if isinstance(data, Spool):
            raise self.error("Literal too large")
        return data

    def message_literal(self) -> bytes | Spool:
        """The message literal of APPEND (quoted strings are not allowed there)."""
        if self.peek() == '"' or not self._at_string():
            raise self.error("APPEND needs a literal")
        return self._literal_any()

    def _literal_any(self) -> bytes | Spool:
        m = LITERAL_RE.search(self.line.encode("latin-1"), self.pos)
        if m is None or m.end() != len(self.line) or self.idx >= len(self.literals):
            raise self.error("Bad literal")
        # A literal marker closes its line; the data follows (RFC 3501 §4.3)
        if m.start() != self.pos:
            raise self.error("Bad literal")
        self.binary_literal = bool(m.group(1))
        data = self.literals[self.idx]
        self.idx += 1
        self.pos = 0
        return data

    def _quoted(self) -> bytes:
        line = self.line
        i = self.pos + 1
        out: list[str] = []
        n = len(line)
        while i < n:
            c = line[i]
            if c == "\\":
                if i + 1 < n and line[i + 1] in '"\\':
                    out.append(line[i + 1])
                    i += 2
                    continue
                raise self.error("Bad escape in quoted string")
            if c == '"':
                self.pos = i + 1
                return "".join(out).encode("latin-1")
            if c in "\r\n\0":
                break
            out.append(c)
            i += 1
        raise self.error("Unterminated quoted string")

    def _at_string(self) -> bool:
        c = self.peek()
        return c in ('"', "{") or (c == "~" and self.line[self.pos + 1 : self.pos + 2] == "{")

    def string(self) -> bytes:
        c = self.peek()
        if c == '"':
            return self._quoted()
        if self._at_string():
            return self._literal()
        raise self.error("Expected string")

    def astring_bytes(self) -> bytes:
        if self._at_string():
            return self.string()
        a = self.take(ASTRING_CHARS)
        if not a:
            raise self.error("Expected string")
        return a.encode("latin-1")

    def astring(self) -> str:
        """astring as text (UTF-8 with surrogateescape, lossless)."""
        return self.astring_bytes().decode("utf-8", "surrogateescape")

    def nstring(self) -> bytes | None:
        if self.line[self.pos : self.pos + 3].upper() == "NIL" and (
            self.pos + 3 >= len(self.line) or self.line[self.pos + 3] in " )"
        ):
            self.pos += 3
            return None
        return self.string()

    def mailbox(self) -> str:
        """Mailbox name: INBOX case-insensitive (RFC 3501 §5.1), mUTF-7 decoded."""
        return self._decode_mailbox(self.astring_bytes())

    def list_mailbox(self) -> str:
        if self._at_string():
            raw = self.string()
        else:
            t = self.take(LIST_CHARS)
            if not t:
                raise self.error("Expected mailbox pattern")
            raw = t.encode("latin-1")
        return self._decode_mailbox(raw, pattern=True)

    def _decode_mailbox(self, raw: bytes, pattern: bool = False) -> str:
        if self.utf8:  # RFC 6855 §3: UTF-8 names, no modified UTF-7 any more
            try:
                name = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise self.error("Mailbox name is not valid UTF-8") from exc
            if not pattern and name.upper() == "INBOX":
                return "INBOX"
            if not pattern and name[:6].upper() == "INBOX/":
                return "INBOX" + name[5:]
            return name
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError as exc:  # 8-bit octets: RFC 3501 §9 allows none here
            raise self.error("Mailbox name is not valid modified UTF-7") from exc
        try:
            name = decode_mutf7(text)
        except ValueError as exc:
            if pattern:
                # a pattern no stored name encodes to: it simply matches nothing
                # (RFC 3501 §6.3.8), taken as the characters sent
                return text
            # the syntax is right (an astring), only no mailbox can have this name:
            # an operational failure, NO, not a protocol error (RFC 3501 §7.1)
            raise ParseError(
                "Mailbox name is not valid modified UTF-7", self.tag, "CANNOT", "NO"
            ) from exc
        if not pattern and name.upper() == "INBOX":
            return "INBOX"
        if not pattern and name[:6].upper() == "INBOX/":
            return "INBOX" + name[5:]
        return name

    # -- composite ------------------------------------------------------------------
    def flag(self) -> str:
        if self.peek() == "\\":
            self.pos += 1
            if self.peek() == "*":
                self.pos += 1
                return "\\*"
            return "\\" + self.atom().capitalize()
        return self.atom()

    def flag_list(self) -> tuple[str, ...]:
        self.expect("(")
        flags: list[str] = []
        while self.peek() != ")":
            if flags:
                self.sp()
            flags.append(self.flag())
        self.pos += 1
        return tuple(flags)

    def atom_list(self) -> tuple[str, ...]:
        self.expect("(")
        items: list[str] = []
        while self.peek() != ")":
            if items:
                self.sp()
            items.append(self.atom().upper())
        self.pos += 1
        return tuple(items)

    def date(self) -> datetime:
        """date = date-text / DQUOTE date-text DQUOTE (RFC 3501 §9), as UTC midnight."""
        quoted = self.peek() == '"'
        text = self.string().decode("latin-1") if quoted else self.take(ATOM_CHARS)
        try:
            d, m, y = text.split("-")
            return datetime(int(y), _MONTHS.index(m.lower()) + 1, int(d), tzinfo=UTC)
        except ValueError as exc:
            raise self.error("Invalid date") from exc

    def date_time(self) -> datetime:
        """date-time = DQUOTE dd-Mon-yyyy SP hh:mm:ss SP zone DQUOTE (RFC 3501 §9)."""
        if self.peek() != '"':
            raise self.error("Expected date-time")
        text = self.string().decode("latin-1")
        try:
            date_s, time_s, zone = text.strip().split(" ")
            d, m, y = date_s.split("-")
            hh, mm, ss = (int(x) for x in time_s.split(":"))
            if len(zone) != 5 or zone[0] not in "+-":
                raise ValueError(zone)
            off = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
            tz = timezone(-off if zone[0] == "-" else off)
            return datetime(int(y), _MONTHS.index(m.lower()) + 1, int(d), hh, mm, ss, tzinfo=tz)
        except ValueError as exc:
            raise self.error("Invalid date-time") from exc
