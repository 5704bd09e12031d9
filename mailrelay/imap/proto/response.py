"""Server responses (RFC 3501 §7) as frozen dataclasses, and their wire encoding.

Response data is given as bytes already formatted (see :func:`fmt`); strings
that need a literal are produced by :func:`mailrelay.mime.imap_string`.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass

from mailrelay.mime.render import imap_nstring, imap_string

from .mutf7 import encode_mutf7

__all__ = [
    "Response",
    "Untagged",
    "Tagged",
    "Continuation",
    "Bye",
    "fmt",
    "Atom",
    "mailbox_name",
    "quote_text",
]


@dataclass(frozen=True, slots=True)
class Atom:
    """Marks a value written as is (NIL, flags, numbers...) by :func:`fmt`."""

    text: str


def fmt(value: object) -> bytes:
    """Format nested data: list/tuple → ``( )``, str → string, None → NIL, int, Atom."""
    if value is None:
        return b"NIL"
    if isinstance(value, Atom):
        return value.text.encode("utf-8")
    if isinstance(value, bool):
        raise TypeError("bool is not an IMAP value")
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, bytes):
        return value  # pre-formatted
    if isinstance(value, str):
        return imap_string(value.encode("utf-8"))
    if isinstance(value, (list, tuple)):
        return b"(" + b" ".join(fmt(v) for v in value) + b")"
    raise TypeError(f"cannot format {type(value).__name__}")


#: True while a session that ENABLEd UTF8=ACCEPT renders its replies (set per command by
#: the session, so every formatter of mailbox names follows it without new parameters)
UTF8_NAMES: ContextVar[bool] = ContextVar("imap_utf8_names", default=False)


def mailbox_name(name: str) -> bytes:
    """A mailbox name for LIST/STATUS responses: mUTF-7 (RFC 3501 §5.1.3), or UTF-8
    once the client enabled UTF8=ACCEPT (RFC 6855 §3)."""
    if UTF8_NAMES.get():
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
            return imap_string(name.encode("utf-8"))
        # RFC 6855 §3: quoted strings may carry UTF-8 once enabled
        esc = name.replace("\\", "\\\\").replace('"', '\\"')
        return b'"' + esc.encode("utf-8") + b'"'
    return imap_string(encode_mutf7(name).encode("ascii"))


def quote_text(text: str) -> str:
    """Human-readable resp-text: no CR/LF (RFC 3501 §9 text = 1*TEXT-CHAR)."""
    return text.replace("\r", " ").replace("\n", " ")


@dataclass(frozen=True, slots=True)
class Response:
    def to_bytes(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Untagged(Response):
    """``* <data>``; ``data`` is bytes (may embed literals) or text."""

    data: bytes | str

    def to_bytes(self) -> bytes:
        d = self.data.encode("utf-8") if isinstance(self.data, str) else self.data
        return b"* " + d + b"\r\n"


def _cond(status: str, code: str | None, text: str) -> bytes:
    s = status
    if code:
        s += f" [{code}]"
    return (s + " " + quote_text(text or status)).encode("utf-8")


@dataclass(frozen=True, slots=True)
class Tagged(Response):
    """``tag OK|NO|BAD [code] text`` (RFC 3501 §7.1)."""

    tag: str
    status: str
    text: str = ""
    code: str | None = None

    def to_bytes(self) -> bytes:
        return (
            self.tag.encode("latin-1") + b" " + _cond(self.status, self.code, self.text) + b"\r\n"
        )


@dataclass(frozen=True, slots=True)
class UntaggedStatus(Response):
    """``* OK|NO|BAD|PREAUTH [code] text`` (RFC 3501 §7.1)."""

    status: str
    text: str = ""
    code: str | None = None

    def to_bytes(self) -> bytes:
        return b"* " + _cond(self.status, self.code, self.text) + b"\r\n"


@dataclass(frozen=True, slots=True)
class Bye(Response):
    """``* BYE`` (RFC 3501 §7.1.5); the connection closes after it."""

    text: str = "Logging out"
    code: str | None = None

    def to_bytes(self) -> bytes:
        return b"* " + _cond("BYE", self.code, self.text) + b"\r\n"


@dataclass(frozen=True, slots=True)
class Continuation(Response):
    """``+ text`` or ``+ base64`` for SASL challenges (RFC 3501 §7.5)."""

    text: str = "Ready"

    def to_bytes(self) -> bytes:
        return b"+ " + quote_text(self.text).encode("utf-8") + b"\r\n"


def capability_line(caps: Iterable[str]) -> Untagged:
    return Untagged("CAPABILITY " + " ".join(caps))


__all__ += ["UntaggedStatus", "capability_line", "imap_nstring"]
