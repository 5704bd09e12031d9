"""The Authentication-Results header field (RFC 8601): ours, and others claiming our name.

RFC 8601 §5: a receiving border MTA MUST remove (or rename) any Authentication-Results
field that carries its own authserv-id, because only it may have written one; fields of
other authserv-ids are left alone.
"""

from __future__ import annotations

import re

__all__ = ["format_header", "strip_ours"]

_AR = re.compile(rb"^authentication-results[ \t]*:", re.IGNORECASE)
_COMMENT = re.compile(rb"\([^()]*\)")
_VALUE_SAFE = re.compile(r"[^\x21-\x7e]|[()\";\\]")


def _authserv_id(value: bytes) -> str:
    """The authserv-id of a field value: its first token, comments removed."""
    v = value
    while True:  # nested comments are rare; remove innermost first
        stripped = _COMMENT.sub(b" ", v)
        if stripped == v:
            break
        v = stripped
    token = v.strip().split(b";", 1)[0].strip().split()
    return token[0].decode("utf-8", "replace").lower() if token else ""


def strip_ours(raw: bytes, authserv_id: str) -> bytes:
    """Remove every Authentication-Results field of the header section whose authserv-id
    is ours (with its continuation lines); the body is untouched."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return raw
    head, body = raw[:end + 2], raw[end + 2:]
    if b"uthentication-" not in head and b"UTHENTICATION-" not in head:
        return raw
    lines = head.split(b"\r\n")[:-1]
    out: list[bytes] = []
    i = 0
    ours = authserv_id.lower()
    while i < len(lines):
        j = i + 1
        while j < len(lines) and lines[j][:1] in (b" ", b"\t"):
            j += 1
        m = _AR.match(lines[i])
        if m:
            value = b" ".join([lines[i][m.end():], *lines[i + 1:j]])
            if _authserv_id(value) == ours:
                i = j
                continue
        out.extend(lines[i:j])
        i = j
    return b"\r\n".join(out) + b"\r\n" + body


def _val(v: str) -> str:
    """A property value as a token, or a quoted-string when it is not one."""
    if v and not _VALUE_SAFE.search(v):
        return v
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_header(authserv_id: str, results: list[tuple[str, str, str, list[tuple[str, str]]]]
                  ) -> bytes:
    """`results` are (method, result, comment, [(ptype.property, value)]) in order.

    Example: ``Authentication-Results: mail.cx.example;\\r\\n\\tspf=pass
    smtp.mailfrom=example.org;\\r\\n\\tdkim=pass header.d=example.org ...``
    """
    parts = []
    for method, result, comment, props in results:
        item = f"{method}={result}"
        if comment:
            item += " (" + re.sub(r"[()\\\r\n]", "", comment) + ")"
        for key, value in props:
            item += f" {key}={_val(value)}"
        parts.append(item)
    body = ";\r\n\t".join([authserv_id] + parts) if parts else f"{authserv_id}; none"
    return f"Authentication-Results: {body}\r\n".encode("utf-8", "replace")
