"""Fast RFC 5322 header scanning, MIME parameters and address lists.

Every string produced here is the raw header bytes decoded as latin-1, so it
is lossless (``s.encode("latin-1")`` gives back the original bytes), JSON
safe and RFC 2047 encoded-words stay encoded, as IMAP wants them
(RFC 3501 §7.4.2: "the server MUST NOT decode").
"""

from __future__ import annotations

import re

__all__ = [
    "find_header_end",
    "split_fields",
    "unfold",
    "parse_params",
    "parse_content_type",
    "parse_token_value",
    "parse_addresses",
    "strip_comments",
    "parse_language",
]

#: Longest header block we look at, larger blocks are cut (robustness).
MAX_HEADER_SCAN = 1 << 20


def find_header_end(raw: bytes, start: int, end: int) -> tuple[int, int]:
    """Return ``(header_end, body_start)`` for the header block at ``start``.

    ``header_end`` excludes the empty line, ``body_start`` is just after it
    (RFC 5322 §2.1). Accepts CRLF and bare LF. Without an empty line the
    whole region is header and the body is empty.
    """
    if start >= end:
        return start, start
    # A header block that starts with an empty line has no fields.
    if raw.startswith(b"\r\n", start):
        return start, start + 2
    if raw[start] == 0x0A:
        return start, start + 1
    pos = start
    limit = min(end, start + MAX_HEADER_SCAN)
    while True:
        nl = raw.find(b"\n", pos, limit)
        if nl < 0 or nl + 1 >= end:
            return end, end
        nxt = nl + 1
        if raw[nxt] == 0x0A:
            return nxt, nxt + 1
        if raw[nxt] == 0x0D and nxt + 1 < end and raw[nxt + 1] == 0x0A:
            return nxt, nxt + 2
        pos = nxt


def split_fields(raw: bytes, start: int, end: int) -> list[tuple[str, int, int]]:
    """Split a header block into ``(lower_name, field_start, field_end)``.

    ``field_end`` includes the line terminator. Continuation lines (leading
    SP/HTAB, RFC 5322 §2.2.3) belong to the previous field; a line without
    a colon is kept under the name ``""``.
    """
    out: list[tuple[str, int, int]] = []
    pos = start
    while pos < end:
        nl = raw.find(b"\n", pos, end)
        line_end = end if nl < 0 else nl + 1
        first = raw[pos]
        if (first == 0x20 or first == 0x09) and out:
            name, fs, _ = out[-1]
            out[-1] = (name, fs, line_end)
        else:
            colon = raw.find(b":", pos, line_end)
            if colon < 0:
                name = ""
            else:
                name = raw[pos:colon].strip().decode("latin-1").lower()
            out.append((name, pos, line_end))
        pos = line_end
    return out


_FOLD = re.compile(r"\r?\n(?=[ \t])")


def unfold(raw: bytes, field_start: int, field_end: int) -> str:
    """Value of a field (after the colon), unfolded, trimmed (RFC 5322 §2.2.3)."""
    colon = raw.find(b":", field_start, field_end)
    value = raw[colon + 1 if colon >= 0 else field_start : field_end].decode("latin-1")
    if "\n" in value:
        value = _FOLD.sub("", value)
    return value.strip(" \t\r\n")


# --- structured value tokenizer (RFC 5322 §3.2, RFC 2045 §5.1) -------------------

_TSPECIALS = '()<>@,;:\\"/[]?='


def _skip_cfws(s: str, i: int, comments: list[str] | None = None) -> int:
    n = len(s)
    while i < n:
        c = s[i]
        if c in " \t\r\n":
            i += 1
        elif c == "(":
            depth, j, start = 1, i + 1, i + 1
            while j < n and depth:
                if s[j] == "\\":
                    j += 1
                elif s[j] == "(":
                    depth += 1
                elif s[j] == ")":
                    depth -= 1
                j += 1
            if comments is not None:
                comments.append(s[start : j - 1 if depth == 0 else j])
            i = j
        else:
            break
    return i


def _quoted(s: str, i: int) -> tuple[str, int]:
    """Parse a quoted-string starting at s[i] == '"'; return (unescaped, next)."""
    out = []
    i += 1
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\" and i + 1 < n:
            out.append(s[i + 1])
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    return "".join(out), i


def _token(s: str, i: int) -> tuple[str, int]:
    j = i
    n = len(s)
    while j < n and s[j] not in _TSPECIALS and s[j] not in " \t\r\n":
        j += 1
    return s[i:j], j


def parse_token_value(value: str) -> tuple[str, int]:
    """Leading MIME token of a value (e.g. disposition type), and the index after it."""
    i = _skip_cfws(value, 0)
    tok, i = _token(value, i)
    return tok, i


def parse_params(s: str, i: int) -> list[list[str]]:
    """Parse ``*(";" attribute "=" value)`` (RFC 2045 §5.1), joining RFC 2231 pieces.

    Returns ``[[name, value], ...]`` in first-seen order. RFC 2231 continuations
    ``name*0``/``name*1*`` are joined; an extended value keeps its
    ``charset'lang'`` prefix and %-encoding (as Dovecot does, left encoded).
    """
    params: list[list[str]] = []
    pieces: dict[str, dict[int, str]] = {}
    order: list[str] = []
    n = len(s)
    while i < n:
        i = _skip_cfws(s, i)
        if i >= n:
            break
        if s[i] != ";":
            # junk: skip to next ';'
            j = s.find(";", i)
            if j < 0:
                break
            i = j
        i = _skip_cfws(s, i + 1)
        name, i = _token(s, i)
        i = _skip_cfws(s, i)
        if not name or i >= n or s[i] != "=":
            continue
        i = _skip_cfws(s, i + 1)
        if i < n and s[i] == '"':
            val, i = _quoted(s, i)
        else:
            val, i = _token(s, i)
        key = name.lower()
        star = key.find("*")
        if star > 0:
            base = name[:star]
            rest = key[star + 1 :].rstrip("*")
            idx = int(rest) if rest.isdigit() else 0
            bkey = base.lower()
            if bkey not in pieces:
                pieces[bkey] = {}
                order.append(base)
            pieces[bkey].setdefault(idx, val)
            continue
        if any(p[0].lower() == key for p in params):
            continue
        params.append([name, val])
    for base in order:
        parts = pieces[base.lower()]
        if any(p[0].lower() == base.lower() for p in params):
            continue
        params.append([base, "".join(parts[k] for k in sorted(parts))])
    return params


def parse_content_type(value: str) -> tuple[str | None, str | None, list[list[str]]]:
    """Parse ``type "/" subtype *(";" parameter)``; ``(None, None, [])`` if unusable."""
    i = _skip_cfws(value, 0)
    typ, i = _token(value, i)
    i = _skip_cfws(value, i)
    if not typ or i >= len(value) or value[i] != "/":
        return None, None, []
    i = _skip_cfws(value, i + 1)
    sub, i = _token(value, i)
    if not sub:
        return typ, None, parse_params(value, i)
    return typ, sub, parse_params(value, i)


def parse_language(value: str) -> list[str] | None:
    """``Content-Language`` (RFC 3282): a comma separated list of tags."""
    langs = [t.strip() for t in re.sub(r"\([^)]*\)", "", value).split(",")]
    langs = [t for t in langs if t]
    return langs or None


# --- addresses (RFC 5322 §3.4) → IMAP (name, adl, mailbox, host) --------------------

Address = list  # [name|None, adl|None, mailbox|None, host|None]


def _phrase_word(s: str, i: int) -> tuple[str, int]:
    if s[i] == '"':
        return _quoted(s, i)
    j = i
    n = len(s)
    while j < n and s[j] not in '()<>@,;:\\"[]' and s[j] not in " \t\r\n":
        j += 1
    if j == i:  # lone special such as '.' or '@' in a phrase
        return s[i], i + 1
    return s[i:j], j


def strip_comments(s: str) -> str:
    """``s`` without RFC 5322 §3.2.2 comments (nested, escaped; not inside quoted
    strings) and without the folding white space around them."""
    out: list[str] = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == '"':
            j = i + 1
            while j < n and s[j] != '"':
                j += 2 if s[j] == "\\" else 1
            out.append(s[i : j + 1])
            i = j + 1
        elif c == "(":
            i = _skip_cfws(s, i)
        elif c in " \t\r\n":
            i = _skip_cfws(s, i)
            out.append(" ")
        else:
            out.append(c)
            i += 1
    return "".join(out).strip()


def _addr_spec(spec: str) -> tuple[str | None, str | None]:
    # RFC 5322 §3.4.1: CFWS may surround the parts of an addr-spec; it is not part of it
    spec = re.sub(r"\s*([@.])\s*", r"\1", strip_comments(spec))
    at = spec.rfind("@")
    if at < 0:
        return (_unquote_local(spec) or None), None
    return _unquote_local(spec[:at]) or None, spec[at + 1 :].strip() or None


def _unquote_local(local: str) -> str:
    local = local.strip()
    if local.startswith('"') and local.endswith('"') and len(local) > 1:
        return _quoted(local, 0)[0]
    return local


def parse_addresses(value: str) -> list[Address] | None:
    """Parse an address-list into IMAP address structures (RFC 3501 §7.4.2).

    Groups become ``[None, None, group, None] ... [None, None, None, None]``.
    Never raises: junk degrades to whatever could be salvaged, or ``None``.
    """
    try:
        return _parse_addresses(value) or None
    except (IndexError, ValueError):  # pragma: no cover - defensive
        return None


def _parse_addresses(s: str) -> list[Address]:
    out: list[Address] = []
    n = len(s)
    i = 0
    in_group = False
    while i < n:
        words: list[str] = []
        comments: list[str] = []
        raw_start = i
        angle: str | None = None
        adl: str | None = None
        while i < n:
            i = _skip_cfws(s, i, comments)
            if i >= n:
                break
            c = s[i]
            if c == "<":
                j = s.find(">", i)
                j = n if j < 0 else j
                inner = s[i + 1 : j]
                if inner.startswith("@") and ":" in inner:
                    adl, inner = inner.split(":", 1)
                angle = inner
                i = j + 1
            elif c in ",;":
                break
            elif c == ":" and angle is None:
                # group start: words so far are the display name
                out.append([None, None, " ".join(words) or "", None])
                in_group = True
                words, comments = [], []
                i += 1
                raw_start = i
                continue
            else:
                w, i = _phrase_word(s, i)
                words.append(w)
        if angle is not None:
            mbox, host = _addr_spec(angle)
            name = " ".join(words) or (comments[-1] if comments else None)
            out.append([name or None, adl, mbox, host])
        elif words:
            mbox, host = _addr_spec(s[raw_start:i])
            name = comments[-1] if comments else None
            if mbox or host:
                out.append([name, None, mbox, host])
        if i < n and s[i] == ";":
            if in_group:
                out.append([None, None, None, None])
                in_group = False
        i += 1
    if in_group:
        out.append([None, None, None, None])
    return out
