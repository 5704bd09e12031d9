"""Serve BODY[section]<partial> by slicing stored raw bytes (RFC 3501 §6.4.5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .headers import split_fields

__all__ = ["Section", "parse_section", "section_bytes", "find_part"]


@dataclass(frozen=True, slots=True)
class Section:
    """A parsed section spec: ``part`` numbers, then an optional text specifier.

    ``text`` is one of None, "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT",
    "TEXT", "MIME"; ``fields`` are upper-case header names for HEADER.FIELDS.
    """

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        s = ".".join(str(n) for n in self.part)
        if self.text:
            s = f"{s}.{self.text}" if s else self.text
        if self.fields:
            s += " (" + " ".join(self.fields) + ")"
        return s


_TEXTS = ("HEADER.FIELDS.NOT", "HEADER.FIELDS", "HEADER", "TEXT", "MIME")


def parse_section(spec: str) -> Section | None:
    """Parse ``1.2.HEADER.FIELDS (From To)``-style text; None when invalid."""
    spec = spec.strip()
    fields: tuple[str, ...] = ()
    if "(" in spec:
        spec, _, rest = spec.partition("(")
        fields = tuple(f.upper() for f in rest.rstrip(")").split())
        spec = spec.strip()
    nums: list[int] = []
    text: str | None = None
    rest = spec
    while rest:
        head, _, tail = rest.partition(".")
        if head.isdigit() and int(head) > 0:
            nums.append(int(head))
            rest = tail
            continue
        text = rest.upper()
        break
    if text is not None and text not in _TEXTS:
        return None
    if text == "MIME" and not nums:
        return None
    if (text or "").startswith("HEADER.FIELDS") != bool(fields):
        return None
    return Section(tuple(nums), text, fields)


def find_part(body: dict[str, Any], nums: tuple[int, ...]) -> dict[str, Any] | None:
    """Walk part numbers (RFC 3501 §6.4.5); None if the part does not exist."""
    p = body
    for depth, n in enumerate(nums):
        if depth > 0 and "msg" in p:
            p = p["msg"]  # numbers below a message/rfc822 address its body
        children = p.get("parts")
        if children is None:
            if n != 1:
                return None  # a non-multipart body has only part 1: itself
            continue
        if n > len(children):
            return None
        p = children[n - 1]
    return p


def _header_fields(raw: bytes, hs: int, he: int, names: tuple[str, ...], negate: bool) -> bytes:
    wanted = {n.lower() for n in names}
    out = [
        raw[fs:fe]
        for name, fs, fe in split_fields(raw, hs, he)
        if (name in wanted) != negate and name
    ]
    # RFC 3501 §6.4.5: the subset includes the delimiting blank line
    return b"".join(out) + b"\r\n"


def section_bytes(
    raw: bytes,
    structure: dict[str, Any],
    section: str | Section,
    partial: tuple[int, int | None] | None = None,
) -> bytes | None:
    """Bytes of a BODY[section] fetch, or None if the section does not exist.

    ``partial`` is ``(start, length)`` from ``<start.length>``
    (RFC 3501 §6.4.5: a start beyond the end gives an empty string).
    """
    sec = parse_section(section) if isinstance(section, str) else section
    if sec is None:
        return None
    data = _section(raw, structure["body"], sec)
    if data is None or partial is None:
        return data
    start, length = partial
    return data[start:] if length is None else data[start : start + length]


def _section(raw: bytes, root: dict[str, Any], sec: Section) -> bytes | None:
    if not sec.part:
        msg = root
    else:
        p = find_part(root, sec.part)
        if p is None:
            return None
        if sec.text is None:
            return raw[p["bs"] : p["be"]]
        if sec.text == "MIME":
            return raw[p["hs"] : p["bs"]]
        if "msg" not in p:
            return None  # HEADER/TEXT only apply to message/rfc822 parts
        msg = p["msg"]
    if sec.text is None:
        return raw[msg["hs"] : msg["be"]]
    if sec.text == "HEADER":
        return raw[msg["hs"] : msg["bs"]]
    if sec.text == "TEXT":
        return raw[msg["bs"] : msg["be"]]
    if sec.text == "HEADER.FIELDS":
        return _header_fields(raw, msg["hs"], msg["he"], sec.fields, False)
    if sec.text == "HEADER.FIELDS.NOT":
        return _header_fields(raw, msg["hs"], msg["he"], sec.fields, True)
    return None
