"""Content decoding for SEARCH and BINARY: RFC 2047 words, transfer encodings, charsets."""

from __future__ import annotations

import base64
import binascii
import codecs
import quopri
import re
from typing import Any

__all__ = ["decode_words", "decode_transfer", "part_text", "charset_of"]

_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_WS_BETWEEN = re.compile(r"(\?=)\s+(=\?)")


def _codec(charset: str) -> str:
    charset = charset.split("*", 1)[0].strip().lower() or "us-ascii"  # RFC 2231 language
    try:
        return codecs.lookup(charset).name
    except LookupError:
        return "latin-1"


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded-words in a latin-1 header string; never raises."""
    if "=?" not in value:
        return _utf8_or_latin1(value)
    value = _WS_BETWEEN.sub(r"\1\2", value)  # RFC 2047 §6.2: whitespace between words

    def one(m: re.Match[str]) -> str:
        charset, enc, text = m.group(1), m.group(2).upper(), m.group(3)
        try:
            if enc == "B":
                data = base64.b64decode(text + "=" * (-len(text) % 4))
            else:
                data = quopri.decodestring(text.replace("_", " ").encode("latin-1"), header=True)
        except (binascii.Error, ValueError):
            return m.group(0)
        return data.decode(_codec(charset), "replace")

    return _utf8_or_latin1(_WORD.sub(one, value))


def _utf8_or_latin1(value: str) -> str:
    """Raw 8-bit headers (RFC 6532) are usually UTF-8: try that first."""
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def decode_transfer(data: bytes, encoding: str | None) -> bytes | None:
    """Undo a Content-Transfer-Encoding; None for an unknown encoding (RFC 3516 §4.2)."""
    enc = (encoding or "7bit").lower()
    if enc in ("7bit", "8bit", "binary"):
        return data
    if enc == "base64":
        clean = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
        clean = clean[: len(clean) - len(clean) % 4] if len(clean) % 4 == 1 else clean
        try:
            return base64.b64decode(clean + b"=" * (-len(clean) % 4))
        except (binascii.Error, ValueError):
            return b""
    if enc == "quoted-printable":
        return decode_qp(data)
    return None


_QP_OCTET = re.compile(rb"=([0-9A-Fa-f]{2})")


def decode_qp(data: bytes) -> bytes:
    """Quoted-printable body decoding exactly as RFC 2045 §6.7 says.

    Trailing white space on a line is transport padding and goes (rule 3); "=" at the
    end of a line (after that) is a soft line break (rule 5); "=" followed by anything
    but two hex digits is kept as it is (the robust reading of §6.7 note (2)); hard
    line breaks become CRLF (rule 4).
    """
    lines = data.split(b"\n")
    out: list[bytes] = []
    for i, line in enumerate(lines):
        line = line.rstrip(b" \t\r")
        soft = line.endswith(b"=")
        if soft:
            line = line[:-1]
        out.append(_QP_OCTET.sub(lambda m: bytes((int(m.group(1), 16),)), line))
        if not soft and i < len(lines) - 1:
            out.append(b"\r\n")
    return b"".join(out)


def charset_of(part: dict[str, Any]) -> str:
    for k, v in part.get("params") or []:
        if k.lower() == "charset":
            return str(v)
    return "us-ascii"


def part_text(raw: bytes, part: dict[str, Any]) -> str:
    """Decoded text of a leaf part (for SEARCH BODY/TEXT); never raises."""
    data = decode_transfer(raw[part["bs"] : part["be"]], part.get("enc")) or b""
    return data.decode(_codec(charset_of(part)), "replace")
