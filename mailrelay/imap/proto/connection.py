"""The sans-IO IMAP server core: bytes in, typed events out, responses to bytes.

Loop shape (h11 style; see ``mailrelay/imap/proto/__init__.py``)::

    core.receive_data(data)               # b"" at EOF
    while (ev := core.next_event()) is not NEED_DATA:
        ... handle ev, core.send(Untagged(...)), core.send(Tagged(...))
    transport.write(core.data_to_send())

The core answers framing and syntax errors itself (tagged BAD, or BYE when it
must close), sends ``+`` for accepted synchronising literals, tracks the
session state from the tagged replies the server sends (the one source of truth:
the driver asks :attr:`ImapServerCore.state`, :attr:`selected` and :attr:`enabled`
and keeps no copy), enters IDLE and
AUTHENTICATE exchanges when the server sends a continuation for them, and
applies COMPRESS=DEFLATE (RFC 4978) after the server's OK.

Compressed input is inflated in bounded slices (``decompressobj`` with
``max_length``); after a few slices :meth:`ImapServerCore.next_event` returns
:class:`InputPending` so the driver can let other connections run before asking
again: a deflate bomb costs memory of one slice and never blocks the loop.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from enum import Enum

from . import commands as c
from .errors import ParseError
from .lexer import LITERAL_RE
from .parser import decode_base64, parse_command
from .reader import ID_MAX_BYTES, CommandReader, Limits, NeedLiteral, RawCommand, Refused
from .response import Bye, Continuation, Response, Tagged, UntaggedStatus
from .spool import Spool
from .state import SessionState, allowed, next_state

__all__ = [
    "ImapServerCore",
    "NEED_DATA",
    "Event",
    "CommandReceived",
    "CommandRejected",
    "IdleDone",
    "AuthResponse",
    "ConnectionClosed",
    "InputPending",
    "DEFAULT_LIMITS",
]


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by :meth:`ImapServerCore.next_event` when more bytes are needed.
NEED_DATA = _NeedData()


@dataclass(frozen=True, slots=True)
class Event:
    pass


@dataclass(frozen=True, slots=True)
class CommandReceived(Event):
    command: c.Command


@dataclass(frozen=True, slots=True)
class CommandRejected(Event):
    """The core already answered (BAD/NO); informational, e.g. for logs."""

    tag: str | None
    text: str


@dataclass(frozen=True, slots=True)
class IdleDone(Event):
    """Client sent DONE (RFC 2177); the server sends the tagged OK for ``tag``."""

    tag: str


@dataclass(frozen=True, slots=True)
class AuthResponse(Event):
    """One SASL response line (RFC 3501 §6.2.2); ``cancelled`` for ``*``."""

    tag: str
    data: bytes
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The peer closed, or the core sent BYE: flush ``data_to_send`` and close."""

    reason: str


@dataclass(frozen=True, slots=True)
class InputPending(Event):
    """More compressed input waits to be inflated: yield to other tasks, then call
    :meth:`ImapServerCore.next_event` again (nothing to answer)."""


class _Mode(Enum):
    COMMAND = "command"
    IDLE = "idle"
    AUTH = "auth"
    CLOSED = "closed"


#: Before authentication only a few KB (RFC 9051 §11.1 advises small limits).
DEFAULT_LIMITS: dict[SessionState, Limits] = {
    SessionState.NOT_AUTHENTICATED: Limits(
        max_line=8192, max_literal=4096, max_command=16384, max_id=ID_MAX_BYTES
    ),
    SessionState.AUTHENTICATED: Limits(65536, 64 << 20, (64 << 20) + 65536),
    SessionState.SELECTED: Limits(65536, 64 << 20, (64 << 20) + 65536),
    SessionState.LOGOUT: Limits(1024, 0, 1024),
}

#: bytes one inflate step produces at most, and steps per ``next_event`` call
_INFLATE_CHUNK = 16 * 1024
_INFLATE_STEPS = 4


def _utf8_charset_rules(cmd: c.Command) -> None:
    """RFC 6855 §3 (erratum 4029): after ENABLE UTF8=ACCEPT a SEARCH carries no CHARSET
    and SORT/THREAD only UTF-8; anything else is BAD (conflicting charset labels)."""
    if isinstance(cmd, c.Search) and cmd.charset is not None:
        raise ParseError("No CHARSET after ENABLE UTF8=ACCEPT", cmd.tag)
    if isinstance(cmd, c.Sort | c.Thread) and cmd.charset != "UTF-8":
        raise ParseError("Only UTF-8 after ENABLE UTF8=ACCEPT", cmd.tag)


class ImapServerCore:
    """One IMAP server connection, without I/O."""

    def __init__(
        self,
        limits: dict[SessionState, Limits] | None = None,
        state: SessionState = SessionState.NOT_AUTHENTICATED,
    ) -> None:
        self.limits = dict(DEFAULT_LIMITS if limits is None else limits)
        self._state = state
        self._reader = CommandReader(self.limits[state])
        self._out: list[bytes] = []
        self._out_bytes = 0  # sum of len() over _out, kept as it changes
        self._mode = _Mode.COMMAND
        self._inflight: list[c.Command] = []
        self._eof = False
        self._closed_reported = False
        self._deflate: zlib._Compress | None = None
        self._inflate: zlib._Decompress | None = None
        self._zpending = b""
        self._plain = b""
        #: extensions the client enabled (RFC 5161, RFC 7162 §3.1 CONDSTORE-enabling)
        self.enabled: set[str] = set()
        #: the selected mailbox's view, an opaque object of the driver; set when the
        #: tagged OK of SELECT/EXAMINE is sent, None whenever the state is not SELECTED
        self._selected: object | None = None
        self._staged: object | None = None
        #: set by the server once the client ENABLEd UTF8=ACCEPT (RFC 6855)
        self.utf8_accept = False

    # -- state -----------------------------------------------------------------------
    @property
    def state(self) -> SessionState:
        return self._state

    def set_state(self, state: SessionState) -> None:
        """Force a state (e.g. PREAUTH greeting, RFC 3501 §7.1.4)."""
        self._state = state
        self._reader.limits = self.limits[state]
        if state is not SessionState.SELECTED:
            self._selected = self._staged = None

    @property
    def selected(self) -> object | None:
        """The selected mailbox (what :meth:`stage_selection` gave), None unless SELECTED."""
        return self._selected if self._state is SessionState.SELECTED else None

    def stage_selection(self, mailbox: object) -> None:
        """The mailbox a SELECT/EXAMINE in progress opens once its tagged OK is sent."""
        self._staged = mailbox

    @property
    def compressed(self) -> bool:
        return self._deflate is not None

    @property
    def idling(self) -> bool:
        return self._mode is _Mode.IDLE

    # -- input -----------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
            return
        if self._mode is _Mode.CLOSED:
            return
        if self._inflate is not None:
            self._zpending += data
            self._pump_inflate()
        else:
            self._reader.feed(data)

    def _pump_inflate(self) -> None:
        assert self._inflate is not None
        if not self._zpending:
            return
        try:
            out = self._inflate.decompress(self._zpending, _INFLATE_CHUNK)
        except zlib.error:
            self._zpending = b""
            self._fatal("Invalid compressed data")
            return
        self._zpending = self._inflate.unconsumed_tail
        self._reader.feed(out)

    def next_event(self) -> Event | _NeedData:
        steps = 0
        while True:
            ev = self._next_event()
            if ev is NEED_DATA and self._zpending and self._mode is not _Mode.CLOSED:
                if steps >= _INFLATE_STEPS:
                    return InputPending()
                steps += 1
                self._pump_inflate()
                continue
            return ev

    def _next_event(self) -> Event | _NeedData:
        if self._mode is _Mode.CLOSED:
            if not self._closed_reported:
                self._closed_reported = True
                return ConnectionClosed("closed")
            return NEED_DATA
        if self._mode in (_Mode.IDLE, _Mode.AUTH):
            line = self._reader.read_line()
            if line is None:
                return self._eof_or_need()
            if isinstance(line, Refused):
                return self._refuse(Refused(self._inflight[-1].tag, line.text, line.code))
            return self._special_line(line)
        item = self._reader.next()
        if item is None:
            return self._eof_or_need()
        if isinstance(item, NeedLiteral):
            self._queue(Continuation("Ready for literal data").to_bytes())
            return self._next_event()
        if isinstance(item, Refused):
            return self._refuse(item)
        return self._command(item)

    def _eof_or_need(self) -> Event | _NeedData:
        if self._eof:
            self._mode = _Mode.CLOSED
            self._closed_reported = True
            return ConnectionClosed("eof")
        return NEED_DATA

    def _refuse(self, r: Refused) -> Event:
        if r.fatal:
            self._fatal(r.text, r.code)
            self._closed_reported = True
            return ConnectionClosed(r.text)
        # RFC 7888 §4 / RFC 4469: an over-limit APPEND is "NO [TOOBIG]"; before
        # authentication an oversized argument is simply a bad command.
        # any other command over its size limit is BAD (a search program too large)
        authed = self._state is not SessionState.NOT_AUTHENTICATED
        no = r.code == "TOOBIG" and authed and r.append
        self._reject(r.tag, r.text, r.code, "NO" if no else "BAD")
        return CommandRejected(r.tag, r.text)

    def _reject(self, tag: str | None, text: str, code: str | None, status: str = "BAD") -> None:
        if tag is None:
            self._queue(UntaggedStatus("BAD", text, code).to_bytes())
        else:
            self._queue(Tagged(tag, status, text, code).to_bytes())

    def _fatal(self, text: str, code: str | None = None) -> None:
        self._queue(Bye(text, code).to_bytes())
        self._mode = _Mode.CLOSED
        self.set_state(SessionState.LOGOUT)

    def _command(self, raw: RawCommand) -> Event:
        try:
            cmd = parse_command(raw.chunks, utf8=self.utf8_accept)
            if self.utf8_accept:
                _utf8_charset_rules(cmd)
        except ParseError as exc:
            for ch in raw.chunks:
                if isinstance(ch, Spool):
                    ch.close()
            if exc.status == "NO" and self._state is SessionState.SELECTED:
                first = raw.chunks[0] if raw.chunks else b""
                words = first.split(None, 2) if isinstance(first, bytes) else []
                if len(words) > 1 and words[1].upper() in (b"SELECT", b"EXAMINE"):
                    # RFC 3501 §6.3.1: a failed SELECT leaves no mailbox selected
                    self.set_state(SessionState.AUTHENTICATED)
                    if "QRESYNC" in self.enabled:  # RFC 7162 §3.2.11
                        self._out.append(
                            UntaggedStatus("OK", "Previous mailbox closed", "CLOSED").to_bytes()
                        )
            self._reject(exc.tag, exc.text, exc.code, exc.status)
            return CommandRejected(exc.tag, exc.text)
        if not allowed(self._state, cmd):
            text = f"{cmd.name} not allowed in state {self._state.value}"
            self._reject(cmd.tag, text, None)
            return CommandRejected(cmd.tag, text)
        self._inflight.append(cmd)
        if isinstance(cmd, c.Select) and self._state is SessionState.SELECTED:
            # RFC 3501 §6.3.1: SELECT first closes the selected mailbox, whatever its outcome
            self.set_state(SessionState.AUTHENTICATED)
            if "QRESYNC" in self.enabled:  # RFC 7162 §3.2.11
                self._out.append(UntaggedStatus("OK", "Previous mailbox closed", "CLOSED").to_bytes())
        return CommandReceived(cmd)

    def _special_line(self, line: bytes) -> Event:
        cmd = self._inflight[-1]
        if self._mode is _Mode.IDLE:
            self._mode = _Mode.COMMAND
            if line.strip().upper() == b"DONE":  # RFC 2177 §3
                return IdleDone(cmd.tag)
            self._finish(cmd)
            self._reject(cmd.tag, "Expected DONE", None)
            return CommandRejected(cmd.tag, "Expected DONE")
        self._mode = _Mode.COMMAND
        if line == b"*":  # RFC 3501 §6.2.2: client cancels the exchange
            return AuthResponse(cmd.tag, b"", cancelled=True)
        try:
            data = decode_base64(line.decode("latin-1").strip())
        except ParseError:
            self._finish(cmd)
            self._reject(cmd.tag, "Invalid base64 in SASL response", None)
            return CommandRejected(cmd.tag, "Invalid base64")
        return AuthResponse(cmd.tag, data)

    def _finish(self, cmd: c.Command) -> None:
        if cmd in self._inflight:
            self._inflight.remove(cmd)

    # -- output ----------------------------------------------------------------------
    def send(self, response: Response) -> None:
        """Queue a response; tagged replies drive the state machine."""
        data = response.to_bytes()
        self._write(data)
        if isinstance(response, Continuation) and self._inflight:
            last = self._inflight[-1]
            if isinstance(last, c.Idle):
                self._mode = _Mode.IDLE
            elif isinstance(last, c.Authenticate):
                self._mode = _Mode.AUTH
        elif isinstance(response, Tagged):
            cmd = next((x for x in self._inflight if x.tag == response.tag), None)
            if cmd is None:
                return
            self._finish(cmd)
            if self._mode in (_Mode.IDLE, _Mode.AUTH):
                self._mode = _Mode.COMMAND
            new = next_state(self._state, cmd, response.status)
            if new is not self._state:
                self.set_state(new)
            if isinstance(cmd, c.Select):
                self._selected = self._staged if new is SessionState.SELECTED else None
                self._staged = None
            if response.status == "OK":
                self._after_ok(cmd)
        elif isinstance(response, Bye):
            self._mode = _Mode.CLOSED
            self.set_state(SessionState.LOGOUT)

    def _after_ok(self, cmd: c.Command) -> None:
        if isinstance(cmd, c.StartTLS):
            # RFC 3501 §6.2.1 / RFC 2595 §3.1: drop anything pipelined in clear text
            self._reader.clear()
        elif isinstance(cmd, c.Compress):
            # RFC 4978 §3: compression starts right after the tagged OK
            self._plain = b"".join(self._out)  # the OK itself goes out uncompressed
            self._out.clear()
            self._out_bytes = 0
            self._deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
            self._inflate = zlib.decompressobj(-15)
            pending = bytes(self._reader.buf)
            self._reader.buf.clear()
            if pending:
                self._zpending += pending
                self._pump_inflate()
        elif isinstance(cmd, c.Logout):
            self._mode = _Mode.CLOSED

    def _write(self, data: bytes) -> None:
        self._queue(data)

    def _queue(self, data: bytes) -> None:
        self._out.append(data)
        self._out_bytes += len(data)

    def discard_input(self) -> None:
        """The connection is gone: drop buffered input (and close spooled literals)."""
        self._reader.clear()
        self._zpending = b""

    def buffered_lines(self, limit: int) -> list[bytes]:
        """Up to ``limit`` complete lines already received after the current command,
        without consuming them (a driver may prepare for pipelined commands). Empty
        unless the reader is between commands; stops at the first line with a literal."""
        if self._mode is not _Mode.COMMAND or self._reader.in_command:
            return []
        buf = self._reader.buf
        out: list[bytes] = []
        pos = 0
        while len(out) < limit:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                break
            line = bytes(buf[pos:nl]).removesuffix(b"\r")
            if LITERAL_RE.search(line):
                break
            out.append(line)
            pos = nl + 1
        return out

    def send_partial(self, data: bytes) -> None:
        """Queue a piece of a response streamed in parts (a FETCH of big bodies, written
        item by item so it never sits whole in memory); the caller completes the line."""
        self._queue(data)

    @property
    def pending_output(self) -> int:
        """Bytes queued and not yet taken by :meth:`data_to_send`."""
        return self._out_bytes

    def data_to_send(self) -> bytes:
        """Bytes to write to the transport now (compressed after COMPRESS)."""
        data = b"".join(self._out)
        self._out.clear()
        self._out_bytes = 0
        plain, self._plain = self._plain, b""
        if self._deflate is None or not data:
            return plain + data
        return plain + self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
