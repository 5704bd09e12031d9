"""ManageSieve (RFC 5804) command reader and response writer, sans-IO.

:class:`CommandReader` turns bytes into commands: an atom followed by strings (quoted, or
literals ``{n+}``/``{n}`` per §4) and numbers. Bounds (rule 15): a line is at most
:data:`MAX_LINE` bytes outside literals, and a literal at most ``max_literal`` bytes
(small before login, the script size limit after). Responses are built by :func:`ok`,
:func:`no`, :func:`bye` and :func:`string`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LINE = 8192
MAX_ARGS = 8


class ProtocolError(Exception):
    """The command cannot be read; the connection answers NO (or BYE when `fatal`)."""

    def __init__(self, text: str, fatal: bool = False) -> None:
        super().__init__(text)
        self.fatal = fatal


@dataclass(frozen=True)
class MsCommand:
    name: str  # upper case
    args: tuple[str | int, ...]


NEED_DATA = None
_LITERAL = re.compile(rb"\{(\d{1,9})(\+?)\}$")


class CommandReader:
    """Accumulates bytes; :meth:`next` returns one complete command or NEED_DATA."""

    def __init__(self, max_literal: int) -> None:
        self.max_literal = max_literal
        self.buf = bytearray()
        self.continuation = False  # a SASL response line (a string, no command name) is due

    def feed(self, data: bytes) -> None:
        self.buf += data

    def next(self) -> MsCommand | None:
        pos, args, line_start = 0, [], 0
        while True:
            end = self.buf.find(b"\r\n", pos)
            if end < 0:
                if len(self.buf) - line_start > MAX_LINE:
                    self.buf.clear()
                    raise ProtocolError("Line too long", fatal=True)
                return NEED_DATA
            if end - line_start > MAX_LINE:
                self.buf.clear()
                raise ProtocolError("Line too long", fatal=True)
            line = bytes(self.buf[pos:end])
            m = _LITERAL.search(line)
            tokens = _tokens(line[: m.start()] if m else line)
            args.extend(tokens)
            if len(args) > MAX_ARGS + 1:
                del self.buf[: end + 2]
                raise ProtocolError("Too many arguments")
            if not m:
                del self.buf[: end + 2]
                if self.continuation:
                    self.continuation = False
                    return MsCommand("", tuple(args))
                if not args or not isinstance(args[0], str) or not args[0].isalpha():
                    raise ProtocolError("Expected a command name")
                return MsCommand(str(args[0]).upper(), tuple(args[1:]))
            n = int(m.group(1))
            if n > self.max_literal:
                self.buf.clear()
                raise ProtocolError("Literal too large", fatal=True)
            start = end + 2
            if len(self.buf) < start + n:
                return NEED_DATA
            args.append(bytes(self.buf[start : start + n]).decode("utf-8", "replace"))
            pos = line_start = start + n


def _tokens(line: bytes) -> list[str | int]:
    out: list[str | int] = []
    i, n = 0, len(line)
    while i < n:
        ch = line[i : i + 1]
        if ch == b" ":
            i += 1
        elif ch == b'"':
            j, buf = i + 1, bytearray()
            while j < n and line[j : j + 1] != b'"':
                if line[j : j + 1] == b"\\" and j + 1 < n:
                    j += 1
                buf += line[j : j + 1]
                j += 1
            if j >= n:
                raise ProtocolError("Unterminated string")
            out.append(buf.decode("utf-8", "replace"))
            i = j + 1
        else:
            j = i
            while j < n and line[j : j + 1] != b" ":
                j += 1
            atom = line[i:j].decode("ascii", "replace")
            out.append(int(atom) if atom.isdigit() and len(atom) <= 9 else atom)
            i = j
    return out


def string(s: str) -> bytes:
    """A quoted string, or a literal when it has line breaks or is long (§4)."""
    b = s.encode("utf-8")
    if b"\r" in b or b"\n" in b or len(b) > 1024:
        return b"{%d}\r\n" % len(b) + b
    return b'"' + b.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _response(word: bytes, code: str, text: str) -> bytes:
    out = word
    if code:
        out += b" (" + code.encode("ascii") + b")"
    if text:
        out += b" " + string(text)
    return out + b"\r\n"


def ok(text: str = "", code: str = "") -> bytes:
    return _response(b"OK", code, text)


def no(text: str, code: str = "") -> bytes:
    return _response(b"NO", code, text)


def bye(text: str, code: str = "") -> bytes:
    return _response(b"BYE", code, text)
