"""Command framing: CRLF lines and ``{n}`` / ``{n+}`` literals under size limits.

RFC 3501 §4.3 (synchronising literals need a ``+`` continuation first),
RFC 7888 (LITERAL+: ``{n+}`` data follows at once). Memory stays bounded: a
line longer than ``max_line`` is discarded up to its CRLF, a literal over
``max_literal`` is never buffered, a command other than APPEND may not exceed
``max_plain`` (it bounds SEARCH programs too), and an APPEND literal larger than
``spool_over`` goes to a temporary file (:class:`~.spool.Spool`) as it arrives.
"""

from __future__ import annotations

from dataclasses import dataclass

from .lexer import LITERAL_RE
from .parser import parse_tag
from .spool import Spool

__all__ = ["Limits", "CommandReader", "RawCommand", "NeedLiteral", "Refused"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-state input limits, in bytes."""

    max_line: int = 8192
    max_literal: int = 4096
    max_command: int = 16384
    #: bound for every command but APPEND (None: ``max_command``)
    max_plain: int | None = None
    #: APPEND literals above this many bytes are spooled to disk (None: never)
    spool_over: int | None = None
    spool_dir: str | None = None


@dataclass(frozen=True, slots=True)
class RawCommand:
    """``[line, literal, line, ...]``; a spooled literal is a :class:`Spool`."""

    chunks: list[bytes | Spool]


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
    append: bool = False  # the refused command is an APPEND (answered NO [TOOBIG])


class CommandReader:
    """Splits a byte stream into commands; call :meth:`next` until it returns None."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.buf = bytearray()
        self._chunks: list[bytes | Spool] = []
        self._size = 0
        self._literal: int | None = None
        self._spool: Spool | None = None
        self._ram = 0  # bytes of this command held in memory (spooled literals excluded)
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
        for ch in self._chunks:
            if isinstance(ch, Spool):
                ch.close()
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        self._chunks = []
        self._size = 0
        self._ram = 0
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
                if self._spool is not None:
                    spool = self._spool
                    take = min(n - spool.size, len(self.buf))
                    if take:
                        spool.write(memoryview(self.buf)[:take])
                        del self.buf[:take]
                    if spool.size < n:
                        return None
                    self._chunks.append(spool)
                    self._spool = None
                    self._literal = None
                    continue
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
            self._ram += len(line) + 2
            first = self._chunks[0] if self._chunks else line
            assert isinstance(first, bytes)
            append = _is_append(first)
            limit = self.limits.max_command
            if not append and self.limits.max_plain is not None:
                limit = min(limit, self.limits.max_plain)
            m = LITERAL_RE.search(line)
            if m is None:
                if self._size > limit:
                    tag = parse_tag(first)
                    self._reset()
                    return Refused(tag, "Command too long", "TOOBIG")
                chunks = [*self._chunks, line]
                self._chunks = []  # handed over: the command owns its spools now
                self._reset()
                return RawCommand(chunks)
            size = int(m.group(2))
            nonsync = bool(m.group(3))
            tag = parse_tag(first)
            if size > self.limits.max_literal or self._size + size > limit:
                self._reset()
                if nonsync:
                    # RFC 7888 §4: the data is already on its way; we will not
                    # read it, so the only safe answer is BYE and close.
                    return Refused(tag, "Literal too large", "TOOBIG", fatal=True)
                # RFC 3501 §7.5: without "+" the client does not send the data
                return Refused(tag, "Literal too large", "TOOBIG", append=append)
            self._chunks.append(line)
            self._size += size
            self._literal = size
            spool_over = self.limits.spool_over
            if append and spool_over is not None and self._ram + size > spool_over:
                self._spool = Spool(self.limits.spool_dir)
            else:
                self._ram += size
            if not nonsync:
                return NeedLiteral(tag, size)


def _is_append(first_line: bytes) -> bool:
    """Whether a command's first line is an APPEND (``tag APPEND ...``)."""
    parts = first_line[:64].split(b" ", 2)
    return len(parts) > 1 and parts[1].upper() == b"APPEND"
