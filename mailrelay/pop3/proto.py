"""The POP3 protocol core (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 SASL), sans-IO.

Feed bytes with :meth:`Pop3Core.receive_data`, take typed requests with
:meth:`Pop3Core.next_event`, answer them with :meth:`ok`, :meth:`err` or :meth:`multiline`,
and send :meth:`data_to_send`. The core owns the protocol state (AUTHORIZATION →
TRANSACTION → UPDATE, rule 13): it refuses commands that do not belong to the current state
and checks their arguments, so the driver only ever sees requests it may act on. Message
numbers and deletion marks live in :class:`Maildrop`, also pure.

Bounds (rule 15): a command line is at most 255 octets (RFC 2449 §4), a SASL response line
at most :data:`MAX_SASL_LINE`; past that the peer gets ``-ERR`` and the connection closes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

MAX_LINE = 255  # RFC 2449 §4: commands, including the CRLF
MAX_SASL_LINE = 8192  # a base64 SASL response (SCRAM messages are a few hundred bytes)
MAX_ERRORS = 10  # unknown or malformed commands before the server hangs up


class State(enum.Enum):
    AUTHORIZATION = "authorization"
    SASL = "sasl"  # between AUTH and the client's last response
    TRANSACTION = "transaction"
    UPDATE = "update"
    CLOSED = "closed"


@dataclass(frozen=True)
class Request:
    """A command the core accepted in the current state; ``args`` already checked."""

    verb: str
    args: tuple[str, ...] = ()

    def number(self, i: int = 0) -> int:
        return int(self.args[i])


@dataclass(frozen=True)
class SaslData:
    """One client response line during AUTH (base64 text, or ``*`` to cancel)."""

    line: str


@dataclass(frozen=True)
class Closed:
    """The peer must be disconnected (QUIT answered, or too many errors, or a line too long)."""

    reason: str


NEED_DATA = object()

# verb -> (states it is valid in, min args, max args, numeric args' positions)
_COMMANDS: dict[str, tuple[frozenset[State], int, int, tuple[int, ...]]] = {
    "CAPA": (frozenset({State.AUTHORIZATION, State.TRANSACTION}), 0, 0, ()),
    "QUIT": (frozenset({State.AUTHORIZATION, State.TRANSACTION}), 0, 0, ()),
    "NOOP": (frozenset({State.TRANSACTION}), 0, 0, ()),
    "STLS": (frozenset({State.AUTHORIZATION}), 0, 0, ()),
    "USER": (frozenset({State.AUTHORIZATION}), 1, 1, ()),
    "PASS": (frozenset({State.AUTHORIZATION}), 1, 1, ()),  # see _split: the rest of the line
    "AUTH": (frozenset({State.AUTHORIZATION}), 0, 2, ()),
    "STAT": (frozenset({State.TRANSACTION}), 0, 0, ()),
    "LIST": (frozenset({State.TRANSACTION}), 0, 1, (0,)),
    "UIDL": (frozenset({State.TRANSACTION}), 0, 1, (0,)),
    "RETR": (frozenset({State.TRANSACTION}), 1, 1, (0,)),
    "DELE": (frozenset({State.TRANSACTION}), 1, 1, (0,)),
    "TOP": (frozenset({State.TRANSACTION}), 2, 2, (0, 1)),
    "RSET": (frozenset({State.TRANSACTION}), 0, 0, ()),
}


def _split(line: str) -> tuple[str, tuple[str, ...]]:
    verb, _, rest = line.partition(" ")
    verb = verb.upper()
    if verb == "PASS":  # RFC 1939 §7: the password may contain spaces
        return verb, (rest,) if rest else ()
    return verb, tuple(a for a in rest.split(" ") if a)


class Pop3Core:
    """One POP3 server connection's protocol state."""

    def __init__(self, *, tls: bool, tls_available: bool) -> None:
        self.state = State.AUTHORIZATION
        self.tls = tls
        self.tls_available = tls_available
        self.user: str | None = None  # the name given with USER, until PASS (RFC 1939 §7)
        self._in = bytearray()
        self._out = bytearray()
        self._errors = 0
        self._closed: Closed | None = None

    # -- input -----------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if self.state is not State.CLOSED:
            self._in += data

    def next_event(self) -> Request | SaslData | Closed | object:
        """The next request, SASL line or close; NEED_DATA when a line is incomplete."""
        while True:
            if self._closed is not None:
                ev, self._closed = self._closed, None
                return ev
            if self.state is State.CLOSED:
                return NEED_DATA
            limit = MAX_SASL_LINE if self.state is State.SASL else MAX_LINE
            end = self._in.find(b"\r\n", 0, limit + 1)
            if end < 0:
                lf = self._in.find(b"\n", 0, limit + 1)
                if lf >= 0:  # a bare LF ends a line too (lenient, as Dovecot)
                    end, skip = lf, 1
                elif len(self._in) >= limit:
                    self.err("Command line too long")
                    self._close("line too long")
                    continue
                else:
                    return NEED_DATA
            else:
                skip = 2
            raw = bytes(self._in[:end])
            del self._in[: end + skip]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                line = raw.decode("latin-1")
            if self.state is State.SASL:
                return SaslData(line.strip())
            req = self._command(line)
            if req is not None:
                return req

    def _command(self, line: str) -> Request | None:
        verb, args = _split(line.strip())
        spec = _COMMANDS.get(verb)
        if spec is None:
            self._bad(f"Unknown command: {verb[:20]}" if verb else "Empty command")
            return None
        states, lo, hi, numeric = spec
        if self.state not in states:
            self._bad(f"{verb} is not valid in the {self.state.value} state")
            return None
        if not lo <= len(args) <= hi:
            self._bad(f"Wrong number of arguments for {verb}")
            return None
        for i in numeric:
            if i < len(args) and not (args[i].isdigit() and len(args[i]) <= 9):
                self._bad("Invalid message number" if i == 0 else "Invalid number")
                return None
        if verb == "PASS" and self.user is None:  # RFC 1939 §7: PASS only right after USER
            self._bad("USER first")
            return None
        if verb in ("USER", "PASS", "AUTH") and args and not self.tls:
            # RFC 2595 §2.2 / §4: no plaintext passwords before STLS (Dovecot's
            # disable_plaintext_auth); AUTH with no argument only lists mechanisms
            self.err("[AUTH] Plaintext authentication disallowed on non-secure connections,"
                     " use STLS first")
            return None
        if verb == "STLS" and (self.tls or not self.tls_available):
            self._bad("TLS is already active" if self.tls else "STLS not available")
            return None
        if verb == "USER":
            self.user = args[0]
        elif verb == "PASS":  # the name travels with the password; a new try needs USER
            args, self.user = (self.user or "", args[0]), None
        return Request(verb, args)

    def _bad(self, text: str) -> None:
        self._errors += 1
        self.err(text)
        if self._errors >= MAX_ERRORS:
            self._close("too many errors")

    def _close(self, reason: str) -> None:
        """Enter CLOSED; next_event() reports it once."""
        self.state = State.CLOSED
        self._in.clear()
        self._closed = Closed(reason)

    # -- transitions the driver reports ----------------------------------------------------
    def tls_started(self) -> None:
        self.tls = True
        self._in.clear()  # RFC 2595 §4: nothing sent before the handshake counts after it

    def sasl_started(self) -> None:
        self.state = State.SASL

    def sasl_ended(self) -> None:
        if self.state is State.SASL:
            self.state = State.AUTHORIZATION

    def logged_in(self) -> None:
        self.user = None
        self.state = State.TRANSACTION

    def quit(self) -> None:
        """QUIT answered (after UPDATE, when there was a TRANSACTION): close."""
        self._close("quit")

    # -- output ----------------------------------------------------------------------------
    def greeting(self, text: str = "cx-gateway POP3 ready") -> None:
        self.ok(text)

    def ok(self, text: str = "") -> None:
        self._out += b"+OK" + (b" " + _line(text) if text else b"") + b"\r\n"

    def err(self, text: str) -> None:
        self._out += b"-ERR " + _line(text) + b"\r\n"

    def continuation(self, b64: str = "") -> None:
        """A SASL challenge (RFC 5034 §4): ``+ base64``."""
        self._out += b"+ " + b64.encode("ascii") + b"\r\n"

    def multiline(self, first: str, body: bytes | list[str]) -> None:
        """``+OK first`` then the dot-stuffed body and the terminating ``.`` (RFC 1939 §3)."""
        self.ok(first)
        if isinstance(body, list):
            self._out += b"".join(_line(x) + b"\r\n" for x in body)
        else:
            self._out += dot_stuff(body)
        self._out += b".\r\n"

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out


def _line(text: str) -> bytes:
    return text.replace("\r", " ").replace("\n", " ").encode("utf-8")


def dot_stuff(body: bytes) -> bytes:
    """Byte-stuff lines that start with '.' and end the body with CRLF (RFC 1939 §3)."""
    if body.startswith(b"."):
        body = b"." + body
    body = body.replace(b"\r\n.", b"\r\n..")
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body


def top_of(raw: bytes, lines: int) -> bytes:
    """The header, the blank line and the first `lines` lines of the body (RFC 1939 §7 TOP)."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return raw
    head, body = raw[: end + 4], raw[end + 4 :]
    if lines <= 0:
        return head
    parts = body.split(b"\r\n", lines)
    return head + b"\r\n".join(parts[:lines]) + (b"\r\n" if len(parts) > lines else b"")


class Pop3Error(Exception):
    """A request the maildrop refuses: its text goes after ``-ERR``."""


@dataclass
class Maildrop:
    """A stable snapshot of the INBOX for one session (RFC 1939 §8: numbers do not change
    during a session) with the session's deletion marks. Pure: no I/O."""

    uidvalidity: int
    messages: list[tuple[int, int]]  # (uid, size) in UID order; message n = index n-1
    deleted: set[int] = field(default_factory=set)  # message numbers
    retrieved: set[int] = field(default_factory=set)

    def _get(self, n: int) -> tuple[int, int]:
        if not 1 <= n <= len(self.messages):
            raise Pop3Error(f"No such message {n}")
        if n in self.deleted:
            raise Pop3Error(f"Message {n} already deleted")
        return self.messages[n - 1]

    def _live(self) -> list[int]:
        return [n for n in range(1, len(self.messages) + 1) if n not in self.deleted]

    def stat(self) -> str:
        live = self._live()
        return f"{len(live)} {sum(self.messages[n - 1][1] for n in live)}"

    def scan(self, n: int) -> str:
        return f"{n} {self._get(n)[1]}"

    def scan_all(self) -> list[str]:
        return [f"{n} {self.messages[n - 1][1]}" for n in self._live()]

    def uid_of(self, n: int) -> int:
        return self._get(n)[0]

    def unique_id(self, n: int) -> str:
        """UIDL (RFC 1939 §7): stable across sessions, from UIDVALIDITY and the IMAP UID,
        so IMAP and POP3 agree on identity (as Dovecot's ``%08Xv%08Xu``)."""
        return f"{self.uidvalidity:08x}{self._get(n)[0]:08x}"

    def uidl(self, n: int) -> str:
        return f"{n} {self.unique_id(n)}"

    def uidl_all(self) -> list[str]:
        return [f"{n} {self.unique_id(n)}" for n in self._live()]

    def delete(self, n: int) -> None:
        self._get(n)
        self.deleted.add(n)

    def reset(self) -> None:
        self.deleted.clear()

    def deleted_uids(self) -> list[int]:
        return [self.messages[n - 1][0] for n in sorted(self.deleted)]

    def retrieved_uids(self) -> list[int]:
        return [self.messages[n - 1][0] for n in sorted(self.retrieved - self.deleted)]
