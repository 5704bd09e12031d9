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
    #: bound for an ID command when above the others (before login, see ID_MAX_BYTES)
    max_id: int | None = None


#: RFC 2971 §3.3: at most 30 pairs of a field of at most 30 octets and a value of at most
#: 1024 octets (about 32 KB of text). The largest legal ID quotes every octet with a
#: backslash (2 octets each) plus quotes and spaces, and a tag and "ID (...)" around it:
#: an ID up to this size is read whatever the state; a longer one is BAD [TOOBIG].
ID_MAX_BYTES = 30 * ((2 * 30 + 2) + 1 + (2 * 1024 + 2) + 1) + 64


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
        self._skip_id = False
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

    def _id_command(self, line: bytes) -> bool:
        """Whether the command being read is an ID (its own bound, ``max_id``); ``line``
        is its current line (the first one when no chunk is held yet)."""
        if self.limits.max_id is None:
            return False
        first = self._chunks[0] if self._chunks else line
        return isinstance(first, bytes) and _command_name(first) == b"ID"

    def _max_line(self, line: bytes) -> int:
        lim = self.limits.max_line
        if self.limits.max_id is not None and self.limits.max_id > lim and self._id_command(line):
            return self.limits.max_id
        return lim

    def read_line(self) -> bytes | Refused | None:
        """Next CRLF line without its terminator; None if incomplete."""
        buf = self.buf
        nl = buf.find(b"\n", self._scan)
        if nl < 0:
            self._scan = len(buf)
            if len(buf) > self._max_line(bytes(buf[:64])):
                if not self._skipping:
                    self._skip_tag = parse_tag(bytes(buf[:64]).split(b" ")[0] + b" ")
                    self._skip_id = self._id_command(bytes(buf[:64]))
                self._skipping = True
                self.buf.clear()
                self._scan = 0
            return None
        line = bytes(buf[:nl])
        del buf[: nl + 1]
        self._scan = 0
        if line.endswith(b"\r"):
            line = line[:-1]
        if self._skipping or len(line) > self._max_line(line):
            tag = self._skip_tag if self._skipping else parse_tag(line[:64])
            is_id = self._skip_id if self._skipping else self._id_command(line)
            self._skipping = False
            self._reset()
            if is_id and self.limits.max_id is not None:
                return Refused(tag, _ID_TOO_LONG, "TOOBIG")
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
            is_id = self.limits.max_id is not None and _command_name(first) == b"ID"
            if is_id:
                limit = max(limit, self.limits.max_id or 0)
            m = LITERAL_RE.search(line)
            if m is None:
                if self._size > limit:
                    tag = parse_tag(first)
                    self._reset()
                    return Refused(tag, _ID_TOO_LONG if is_id else "Command too long", "TOOBIG")
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


_ID_TOO_LONG = "ID too long (RFC 2971: at most 30 pairs, fields 30 and values 1024 octets)"


def _command_name(first_line: bytes) -> bytes:
    """The command name of a command's first line (``tag NAME ...``), upper case."""
    parts = first_line[:64].split(b" ", 2)
    return parts[1].upper().rstrip(b"\r\n") if len(parts) > 1 else b""


def _is_append(first_line: bytes) -> bool:
    """Whether a command's first line is an APPEND (``tag APPEND ...``)."""
    return _command_name(first_line) == b"APPEND"
