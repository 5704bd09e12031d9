"""Render a stored structure as IMAP ENVELOPE / BODY / BODYSTRUCTURE bytes.

Follows the RFC 3501 §7.4.2 grammar; the element order and defaults match
what Dovecot answers for the same message (text/plain; charset us-ascii,
7bit, an empty text/plain child for a multipart without parts).
"""

from __future__ import annotations

from typing import Any

__all__ = ["imap_string", "imap_nstring", "render_envelope", "render_bodystructure"]

_SAFE_QUOTED = frozenset(range(0x01, 0x80)) - {0x0A, 0x0D}


def imap_string(value: str | bytes) -> bytes:
    """A quoted string, or a literal for 8-bit / CR / LF / NUL (RFC 3501 §4.3)."""
    b = value.encode("latin-1") if isinstance(value, str) else value
    if len(b) < 1024 and all(c in _SAFE_QUOTED for c in b):
        if b"\\" in b or b'"' in b:
            b = b.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        return b'"' + b + b'"'
    return b"{%d}\r\n" % len(b) + b


def imap_nstring(value: str | bytes | None) -> bytes:
    """NIL or :func:`imap_string`."""
    return b"NIL" if value is None else imap_string(value)


def _addr_list(addrs: list[list[str | None]] | None) -> bytes:
    if not addrs:
        return b"NIL"
    return (
        b"(" + b"".join(b"(" + b" ".join(imap_nstring(f) for f in a) + b")" for a in addrs) + b")"
    )


def render_envelope(env: list[Any]) -> bytes:
    """``(date subject from sender reply-to to cc bcc in-reply-to message-id)``."""
    out = []
    for i, v in enumerate(env):
        out.append(_addr_list(v) if 2 <= i <= 7 else imap_nstring(v))
    return b"(" + b" ".join(out) + b")"


def _params(params: list[list[str]] | None) -> bytes:
    if not params:
        return b"NIL"
    return b"(" + b" ".join(imap_string(k) + b" " + imap_string(v) for k, v in params) + b")"


def _ext_tail(p: dict[str, Any]) -> list[bytes]:
    disp = p.get("disp")
    d = b"NIL" if not disp else b"(" + imap_string(disp[0]) + b" " + _params(disp[1]) + b")"
    lang = p.get("lang")
    lg = b"NIL" if not lang else b"(" + b" ".join(imap_string(x) for x in lang) + b")"
    return [d, lg, imap_nstring(p.get("loc"))]


_EMPTY = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0'


def _write(p: dict[str, Any], ext: bool, out: list[bytes]) -> None:
    typ: str = p["type"]
    if typ.lower() == "multipart":
        out.append(b"(")
        children = p.get("parts") or []
        if not children:
            out.append(_EMPTY + (b" NIL NIL NIL NIL)" if ext else b")"))
        for c in children:
            _write(c, ext, out)
        out.append(b" " + imap_string(p["subtype"]))
        if ext:
            out.append(b" " + b" ".join([_params(p.get("params")), *_ext_tail(p)]))
        out.append(b")")
        return
    fields = [
        imap_string(typ),
        imap_string(p["subtype"]),
        _params(p.get("params")),
        imap_nstring(p.get("id")),
        imap_nstring(p.get("desc")),
        imap_string(p.get("enc") or "7bit"),
        b"%d" % (p["be"] - p["bs"]),
    ]
    if "msg" in p:
        sub: list[bytes] = []
        _write(p["msg"], ext, sub)
        fields += [render_envelope(p["env"]), b"".join(sub), b"%d" % p.get("lines", 0)]
    elif typ.lower() == "text":
        fields.append(b"%d" % p.get("lines", 0))
    if ext:
        fields.append(imap_nstring(p.get("md5")))
        fields += _ext_tail(p)
    out.append(b"(" + b" ".join(fields) + b")")


def render_bodystructure(part: dict[str, Any], extended: bool = True) -> bytes:
    """BODYSTRUCTURE (``extended=True``) or BODY (``False``) of a stored part."""
    out: list[bytes] = []
    _write(part, extended, out)
    return b"".join(out)
