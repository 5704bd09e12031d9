"""Byte-level reading and editing of a message's top-level header block (RFC 5322 §2.2).

Shared by the policy, the submission stage and the documents stage. Everything works on
the CRLF bytes as received: fields are never re-folded or re-encoded, so signed content
(DKIM, S/MIME) stays byte-exact around the fields we touch.
"""

from __future__ import annotations


def header_block(raw: bytes) -> bytes:
    """The header block with its last CRLF (all of `raw` if there is no body)."""
    end = raw.find(b"\r\n\r\n")
    return raw if end < 0 else raw[:end + 2]


def has_field(raw: bytes, name: bytes) -> bool:
    block = header_block(raw).lower()
    lname = name.lower() + b":"
    return block.startswith(lname) or (b"\r\n" + lname) in block


def field_values(raw: bytes, name: str) -> list[str]:
    """Unfolded values of every occurrence of a field, decoded as UTF-8 (lossy)."""
    out: list[str] = []
    current: list[str] | None = None
    lname = name.lower().encode()
    for line in header_block(raw).split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and current is not None:
            current.append(line.decode("utf-8", "replace"))
            continue
        if current is not None:
            out.append("".join(current).strip())
            current = None
        k, sep, v = line.partition(b":")
        if sep and k.strip().lower() == lname:
            current = [v.decode("utf-8", "replace")]
    if current is not None:
        out.append("".join(current).strip())
    return out


def drop_field(raw: bytes, name: bytes) -> bytes:
    """Remove every occurrence of a field, with its folded lines, from the top-level header
    block only (the body, and any header inside a MIME part, is untouched)."""
    end = raw.find(b"\r\n\r\n")
    head, body = (raw, b"") if end < 0 else (raw[:end + 2], raw[end + 2:])
    out: list[bytes] = []
    skipping = False
    lname = name.lower() + b":"
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                out.append(line)
            continue
        skipping = line.lower().startswith(lname)
        if not skipping:
            out.append(line)
    return b"\r\n".join(out) + body
