"""Command framing: CRLF lines and ``{n}`` / ``{n+}`` literals under size limits.

RFC 3501 §4.3 (synchronising literals need a ``+`` continuation first),
RFC 7888 (LITERAL+: ``{n+}`` data follows at once). Memory stays bounded: a
line longer than ``max_line`` is discarded up to its CRLF, a literal over
``max_literal`` is never buffered.
"""

from __future__ import annotations

from dataclasses import dataclass

from .lexer import LITERAL_RE
from .parser import parse_tag

__all__ = ["Limits", "CommandReader", "RawCommand", "NeedLiteral", "Refused"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-state input limits, in bytes."""

    max_line: int = 8192
    max_literal: int = 4096
    max_command: int = 16384


@dataclass(frozen=True, slots=True)
class RawCommand:
    chunks: list[bytes]


@dataclass(frozen=True, slots=True)
class NeedLiteral:
    """A synchronising literal was accepted: send ``+`` (RFC 3501 §7.5)."""

    tag: str | None
    size: int


@dataclass(frozen=True, slots=True)
class Refused:
    """Input refused before parsing. ``fatal``: answer with BYE and close."""

    tag: str | None
    text: str
    code: str | None = None
    fatal: bool = False


class CommandReader:
    """Splits a byte stream into commands; call :meth:`next` until it returns None."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.buf = bytearray()
        self._chunks: list[bytes] = []
        self._size = 0
        self._literal: int | None = None
        self._skipping = False
        self._skip_tag: str | None = None
        self._scan = 0

    def feed(self, data: bytes) -> None:
        self.buf += data

    def clear(self) -> None:
        """Forget buffered input (RFC 3501 §6.2.1: nothing sent before TLS survives)."""
        self.buf.clear()
        self._reset()

    @property
    def in_command(self) -> bool:
        return bool(self._chunks) or self._literal is not None

    def _reset(self) -> None:
        self._chunks = []
        self._size = 0
        self._literal = None
        self._scan = 0

    def read_line(self) -> bytes | Refused | None:
        """Next CRLF line without its terminator; None if incomplete."""
        buf = self.buf
        nl = buf.find(b"\n", self._scan)
        if nl < 0:
            self._scan = len(buf)
            if len(buf) > self.limits.max_line:
                if not self._skipping:
                    self._skip_tag = parse_tag(bytes(buf[:64]).split(b" ")[0] + b" ")
                self._skipping = True
                self.buf.clear()
                self._scan = 0
            return None
        line = bytes(buf[:nl])
        del buf[: nl + 1]
        self._scan = 0
        if line.endswith(b"\r"):
            line = line[:-1]
        if self._skipping or len(line) > self.limits.max_line:
            tag = self._skip_tag if self._skipping else parse_tag(line[:64])
            self._skipping = False
            self._reset()
            return Refused(tag, "Command line too long", "TOOBIG")
        return line

    def next(self) -> RawCommand | NeedLiteral | Refused | None:
        while True:
            if self._literal is not None:
                n = self._literal
                if len(self.buf) < n:
                    return None
                self._chunks.append(bytes(self.buf[:n]))
                del self.buf[:n]
                self._literal = None
                continue
            line = self.read_line()
            if line is None or isinstance(line, Refused):
                return line
            self._size += len(line) + 2
            m = LITERAL_RE.search(line)
            if m is None:
                if self._size > self.limits.max_command:
                    tag = parse_tag(self._chunks[0] if self._chunks else line)
                    self._reset()
                    return Refused(tag, "Command too long", "TOOBIG")
                chunks = [*self._chunks, line]
                self._reset()
                return RawCommand(chunks)
            size = int(m.group(2))
            nonsync = bool(m.group(3))
            tag = parse_tag(self._chunks[0] if self._chunks else line)
            if size > self.limits.max_literal or self._size + size > self.limits.max_command:
                self._reset()
                if nonsync:
                    # RFC 7888 §4: the data is already on its way; we will not
                    # read it, so the only safe answer is BYE and close.
                    return Refused(tag, "Literal too large", "TOOBIG", fatal=True)
                # RFC 3501 §7.5: without "+" the client does not send the data
                return Refused(tag, "Literal too large", "TOOBIG")
            self._chunks.append(line)
            self._size += size
            self._literal = size
            if not nonsync:
                return NeedLiteral(tag, size)
