"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3)."""

from __future__ import annotations

import base64
import binascii

__all__ = ["encode_mutf7", "decode_mutf7"]


def _b64(s: str) -> str:
    raw = s.encode("utf-16-be")
    return base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")


def encode_mutf7(name: str) -> str:
    """Unicode mailbox name → wire form: printable ASCII as is, '&' as '&-'."""
    out: list[str] = []
    run: list[str] = []
    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            if run:
                out.append("&" + _b64("".join(run)) + "-")
                run = []
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    if run:
        out.append("&" + _b64("".join(run)) + "-")
    return "".join(out)


def decode_mutf7(name: str) -> str:
    """Wire form → Unicode; raises ``ValueError`` on an invalid encoding."""
    out: list[str] = []
    i = 0
    n = len(name)
    while i < n:
        ch = name[i]
        if not 0x20 <= ord(ch) <= 0x7E:
            raise ValueError("8-bit or control character in mailbox name")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = name.find("-", i + 1)
        if end < 0:
            raise ValueError("unterminated &-sequence")
        chunk = name[i + 1 : end]
        i = end + 1
        if not chunk:
            out.append("&")
            continue
        b64 = chunk.replace(",", "/")
        if "=" in b64 or len(b64) % 4 == 1:
            raise ValueError("bad base64 in mailbox name")
        try:
            raw = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
            text = raw.decode("utf-16-be")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ValueError("bad modified UTF-7") from exc
        # RFC 3501 §5.1.3: printable US-ASCII MUST NOT be base64 encoded
        if not text or any(0x20 <= ord(c) <= 0x7E for c in text):
            raise ValueError("non-canonical modified UTF-7")
        if _b64(text) != chunk:
            raise ValueError("non-canonical modified UTF-7")
        out.append(text)
    return "".join(out)
