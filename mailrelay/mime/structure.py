"""Parse a message ONCE into a JSON-serialisable structure (envelope, body tree, offsets).

The result is stored next to the raw bytes at delivery time; FETCH of ENVELOPE,
BODYSTRUCTURE and any BODY[section] is then answered without re-parsing.

Layout (all plain ``dict``/``list``/``str``/``int``/``None``)::

    {"v": 1, "env": <envelope>, "body": <part>}

    <envelope> = [date, subject, from, sender, reply_to, to, cc, bcc,
                  in_reply_to, message_id]       (RFC 3501 §7.4.2 order)
        address lists are [[name, adl, mailbox, host], ...] or None
    <part> = {"type", "subtype", "params": [[k, v], ...] | None, "id", "desc",
              "enc", "md5", "disp": [type, params|None] | None,
              "lang": [..] | None, "loc",
              "hs", "he", "bs", "be",      byte offsets into the raw message
              "lines",                     number of LF in the body
              "parts": [<part>, ...]       multipart only
              "env", "msg"                 message/rfc822 only (nested envelope, root part)}

Strings are header bytes decoded as latin-1 (lossless). Offsets: the part's
MIME header is raw[hs:he], its body raw[bs:be]; for the root and for the
root of an encapsulated message the header is the RFC 5322 message header.
"""

from __future__ import annotations

from typing import Any

from .headers import (
    find_header_end,
    parse_addresses,
    parse_content_type,
    parse_language,
    parse_params,
    parse_token_value,
    split_fields,
    unfold,
)
from .render import render_envelope

__all__ = ["parse_message", "parse_envelope", "normalize_crlf", "STRUCTURE_VERSION"]

STRUCTURE_VERSION = 1
#: Nesting deeper than this is treated as an opaque leaf (robustness against bombs).
MAX_DEPTH = 64
#: At most this many parts in one message; further boundaries are ignored.
MAX_PARTS = 10_000

Part = dict[str, Any]

_ENV_FIELDS = (
    "date",
    "subject",
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "in-reply-to",
    "message-id",
)
_ADDR_FIELDS = {"from", "sender", "reply-to", "to", "cc", "bcc"}


def normalize_crlf(raw: bytes) -> bytes:
    """Turn bare LF / bare CR into CRLF (store messages like this: RFC 3501 sizes are CRLF)."""
    if b"\r" not in raw:
        return raw.replace(b"\n", b"\r\n")
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def parse_envelope(raw: bytes, hs: int, he: int) -> list[Any]:
    """ENVELOPE fields from the header block raw[hs:he] (RFC 3501 §7.4.2)."""
    found: dict[str, str] = {}
    for name, fs, fe in split_fields(raw, hs, he):
        if name in _ENV_FIELDS and name not in found:
            found[name] = unfold(raw, fs, fe)
    env: list[Any] = []
    for name in _ENV_FIELDS:
        v = found.get(name)
        if name in _ADDR_FIELDS:
            env.append(parse_addresses(v) if v else None)
        else:
            env.append(v if v else None)
    # RFC 3501 §7.4.2: "If the Sender or Reply-To lines are absent in the
    # [RFC-2822] header, or are present but empty, the server sets the
    # corresponding member of the envelope to be the same value as the from member"
    if env[3] is None:
        env[3] = env[2]
    if env[4] is None:
        env[4] = env[2]
    return env


class _Parser:
    __slots__ = ("raw", "count")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.count = 0

    def part(self, hs: int, be: int, default: tuple[str, str], depth: int) -> Part:
        """Parse the entity whose header starts at hs and which ends at be."""
        raw = self.raw
        self.count += 1
        he, bs = find_header_end(raw, hs, be)
        p: Part = {
            "type": None,
            "subtype": None,
            "params": None,
            "id": None,
            "desc": None,
            "enc": None,
            "md5": None,
            "disp": None,
            "lang": None,
            "loc": None,
            "hs": hs,
            "he": he,
            "bs": bs,
            "be": be,
        }
        ctype: str | None = None
        for name, fs, fe in split_fields(raw, hs, he):
            if not name.startswith("content-"):
                continue
            key = name[8:]
            if key == "type" and ctype is None:
                ctype = unfold(raw, fs, fe)
            elif key == "transfer-encoding" and p["enc"] is None:
                p["enc"] = parse_token_value(unfold(raw, fs, fe))[0] or None
            elif key == "id" and p["id"] is None:
                p["id"] = unfold(raw, fs, fe)
            elif key == "description" and p["desc"] is None:
                p["desc"] = unfold(raw, fs, fe)
            elif key == "md5" and p["md5"] is None:
                p["md5"] = unfold(raw, fs, fe)
            elif key == "disposition" and p["disp"] is None:
                v = unfold(raw, fs, fe)
                tok, i = parse_token_value(v)
                if tok:
                    p["disp"] = [tok, parse_params(v, i) or None]
            elif key == "language" and p["lang"] is None:
                p["lang"] = parse_language(unfold(raw, fs, fe))
            elif key == "location" and p["loc"] is None:
                p["loc"] = unfold(raw, fs, fe)
        typ = sub = None
        params: list[list[str]] = []
        if ctype is not None:
            typ, sub, params = parse_content_type(ctype)
        if typ is None:
            typ, sub = default
            params = [["charset", "us-ascii"]] if typ == "text" else []
        ltyp = typ.lower()
        if sub is None:
            sub = {"text": "plain", "multipart": "x-unknown"}.get(ltyp, "unknown")
        if ltyp == "text" and not any(k.lower() == "charset" for k, _ in params):
            params.append(["charset", "us-ascii"])  # RFC 2045 §5.2 default
        p["type"], p["subtype"], p["params"] = typ, sub, params or None
        lsub = sub.lower()
        if depth < MAX_DEPTH and self.count < MAX_PARTS:
            if ltyp == "multipart":
                p["parts"] = self.multipart(p, params, lsub == "digest", depth)
                return p
            if ltyp == "message" and lsub in ("rfc822", "global"):
                nhe, _ = find_header_end(raw, bs, be)
                p["env"] = parse_envelope(raw, bs, nhe)
                p["msg"] = self.part(bs, be, ("text", "plain"), depth + 1)
        p["lines"] = raw.count(b"\n", bs, be)
        return p

    def multipart(self, p: Part, params: list[list[str]], digest: bool, depth: int) -> list[Part]:
        raw = self.raw
        boundary = next((v for k, v in params if k.lower() == "boundary"), None)
        bs, be = p["bs"], p["be"]
        if not boundary:
            return []
        delim = b"--" + boundary.encode("latin-1")
        default = ("message", "rfc822") if digest else ("text", "plain")  # RFC 2046 §5.1.5
        starts: list[tuple[int, int]] = []  # (delimiter line start, next line start)
        closed_at = -1
        pos = bs
        while True:
            hit = raw.find(delim, pos, be)
            if hit < 0:
                break
            pos = hit + len(delim)
            if hit != bs and raw[hit - 1] != 0x0A:
                continue  # RFC 2046 §5.1.1: delimiter must start a line
            closing = raw.startswith(b"--", pos)
            nl = raw.find(b"\n", pos, be)
            line_end = be if nl < 0 else nl + 1
            tail = raw[pos + (2 if closing else 0) : line_end].strip(b" \t\r\n")
            if tail:
                continue  # longer boundary sharing our prefix
            starts.append((hit, line_end))
            if closing:
                closed_at = hit
                break
            pos = line_end
        children: list[Part] = []
        for idx, (hit, content_start) in enumerate(starts):
            if hit == closed_at:
                break
            if idx + 1 < len(starts):
                end = starts[idx + 1][0]
                # the CRLF before the delimiter belongs to it (RFC 2046 §5.1.1)
                if end > content_start and raw[end - 1] == 0x0A:
                    end -= 1
                    if end > content_start and raw[end - 1] == 0x0D:
                        end -= 1
            else:
                end = be  # no closing delimiter: the part runs to the end
            if self.count >= MAX_PARTS:
                break
            children.append(self.part(content_start, max(end, content_start), default, depth + 1))
        return children


def parse_message(raw: bytes) -> dict[str, Any]:
    """Parse ``raw`` once; never raises on malformed input (see module docstring)."""
    parser = _Parser(raw)
    he, _ = find_header_end(raw, 0, len(raw))
    env = parse_envelope(raw, 0, he)
    body = parser.part(0, len(raw), ("text", "plain"), 0)
    # The ENVELOPE response is rendered once here too (latin-1 text of the IMAP bytes), so
    # a header sync (FETCH 1:* (FLAGS ENVELOPE)) only concatenates stored strings.
    envr = render_envelope(env).decode("latin-1")
    return {"v": STRUCTURE_VERSION, "env": env, "envr": envr, "body": body}
