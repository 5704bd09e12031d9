"""Parsing FETCH attributes (RFC 3501 §6.4.5) and SEARCH keys (RFC 3501 §6.4.4)."""

from __future__ import annotations

import re

from mailrelay.mime.sections import Section

from .commands import FetchAttr, SearchKey
from .lexer import ATOM_CHARS, Cursor
from .seqset import SequenceSet

__all__ = ["parse_fetch_attrs", "parse_search_program", "parse_search_key", "seqset"]

_SIMPLE = {
    "ENVELOPE",
    "FLAGS",
    "INTERNALDATE",
    "RFC822",
    "RFC822.HEADER",
    "RFC822.SIZE",
    "RFC822.TEXT",
    "BODY",
    "BODYSTRUCTURE",
    "UID",
    "MODSEQ",
}
# RFC 3501 §6.4.5 macros
_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.")
_SECTION_CHARS = _NAME_CHARS


_SEQ_RE = re.compile(r"[0-9:*,$]*")


def seqset(cur: Cursor) -> SequenceSet:
    m = _SEQ_RE.match(cur.line, cur.pos)  # one regex scan: sets can be 64 KB and more
    text = m.group() if m else ""
    cur.pos += len(text)
    try:
        return SequenceSet.parse(text)
    except Exception as exc:
        raise cur.error(str(exc) or "Invalid sequence set") from exc


def _section(cur: Cursor, binary: bool) -> Section:
    cur.expect("[")
    spec = cur.take(_SECTION_CHARS).upper()
    nums: list[int] = []
    text: str | None = None
    rest = spec
    while rest:
        head, _, tail = rest.partition(".")
        if head.isdigit() and head[0] != "0":
            nums.append(int(head))
            rest = tail
            if not tail and spec.endswith("."):
                raise cur.error("Invalid section")
            continue
        text = rest
        break
    if text is not None:
        if binary or text not in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"):
            raise cur.error("Invalid section")
        if text == "MIME" and not nums:
            raise cur.error("Invalid section")
    fields: tuple[str, ...] = ()
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        cur.sp()
        cur.expect("(")
        names: list[str] = []
        while cur.peek() != ")":
            if names:
                cur.sp()
            names.append(cur.astring_bytes().decode("latin-1").upper())
        cur.pos += 1
        if not names:
            raise cur.error("Empty header list")
        fields = tuple(names)
    cur.expect("]")
    return Section(tuple(nums), text, fields)


def _fetch_att(cur: Cursor) -> list[FetchAttr]:
    name = cur.take(_NAME_CHARS).upper()
    if name in _MACROS:
        return [FetchAttr(n) for n in _MACROS[name]]
    if cur.peek() == "[" and name in ("BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE"):
        binary = name.startswith("BINARY")
        section = _section(cur, binary)
        partial = None
        if cur.peek() == "<" and name != "BINARY.SIZE":
            cur.pos += 1
            start = cur.number()
            cur.expect(".")
            length = cur.nz_number()
            cur.expect(">")
            partial = (start, length)
        base = name.removesuffix(".PEEK")
        return [FetchAttr(base, section, partial, peek=name.endswith(".PEEK"))]
    if name in _SIMPLE:
        return [FetchAttr(name)]
    raise cur.error(f"Unknown FETCH attribute {name[:30]!r}")


def parse_fetch_attrs(cur: Cursor) -> tuple[FetchAttr, ...]:
    """``ALL`` / ``FAST`` / ``FULL`` / fetch-att / ``(`` fetch-att *(SP fetch-att) ``)``."""
    attrs: list[FetchAttr] = []
    if cur.peek() == "(":
        cur.pos += 1
        while True:
            attrs += _fetch_att(cur)
            if cur.peek() == ")":
                cur.pos += 1
                break
            cur.sp()
    else:
        attrs = _fetch_att(cur)
    return tuple(attrs)


# --- SEARCH --------------------------------------------------------------------------

_FLAG_KEYS = {
    "ANSWERED": "\\Answered",
    "DELETED": "\\Deleted",
    "DRAFT": "\\Draft",
    "FLAGGED": "\\Flagged",
    "SEEN": "\\Seen",
    "RECENT": "\\Recent",
}
_DATE_KEYS = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}
_ADDR_KEYS = {"BCC", "CC", "FROM", "TO", "SUBJECT"}
_MAX_DEPTH = 50
#: Most keys one SEARCH/SORT/THREAD program may hold: evaluation costs messages × keys,
#: so a huge program is refused with BAD before any work (a 64 KB UID set is one key).
MAX_SEARCH_KEYS = 1000


def _flag(name: str) -> SearchKey:
    return SearchKey("FLAG", (name,))


def _not(k: SearchKey) -> SearchKey:
    return SearchKey("NOT", (k,))


def parse_search_key(cur: Cursor, depth: int = 0) -> SearchKey:
    if depth > _MAX_DEPTH:
        raise cur.error("Search program nested too deeply")
    c = cur.peek()
    if c == "(":
        cur.pos += 1
        keys = [parse_search_key(cur, depth + 1)]
        while cur.peek() != ")":
            cur.sp()
            keys.append(parse_search_key(cur, depth + 1))
        cur.pos += 1
        return keys[0] if len(keys) == 1 else SearchKey("AND", tuple(keys))
    if c and c in "0123456789*$":
        return SearchKey("SEQ", (seqset(cur),))
    word = cur.take(ATOM_CHARS).upper()
    if word in ("ALL",):
        return SearchKey("ALL")
    if word in _FLAG_KEYS:
        return _flag(_FLAG_KEYS[word])
    if word.startswith("UN") and word[2:] in _FLAG_KEYS and word != "UNRECENT":
        return _not(_flag(_FLAG_KEYS[word[2:]]))
    if word == "NEW":
        return SearchKey("AND", (_flag("\\Recent"), _not(_flag("\\Seen"))))
    if word == "OLD":
        return _not(_flag("\\Recent"))
    if word in ("KEYWORD", "UNKEYWORD"):
        cur.sp()
        k = _flag(cur.flag())
        return k if word == "KEYWORD" else _not(k)
    if word in _ADDR_KEYS:
        cur.sp()
        return SearchKey("HEADER", (word, cur.astring_bytes()))
    if word == "HEADER":
        cur.sp()
        name = cur.astring_bytes().decode("latin-1").upper()
        cur.sp()
        return SearchKey("HEADER", (name, cur.astring_bytes()))
    if word in ("BODY", "TEXT"):
        cur.sp()
        return SearchKey(word, (cur.astring_bytes(),))
    if word in _DATE_KEYS:
        cur.sp()
        return SearchKey(word, (cur.date().date(),))
    if word in ("LARGER", "SMALLER"):
        cur.sp()
        return SearchKey(word, (cur.number(),))
    if word == "UID":
        cur.sp()
        return SearchKey("UID", (seqset(cur),))
    if word == "NOT":
        cur.sp()
        return _not(parse_search_key(cur, depth + 1))
    if word == "OR":
        cur.sp()
        a = parse_search_key(cur, depth + 1)
        cur.sp()
        return SearchKey("OR", (a, parse_search_key(cur, depth + 1)))
    if word == "MODSEQ":  # RFC 7162 §3.1.5
        cur.sp()
        if cur.peek() == '"':
            cur.string()  # entry-name
            cur.sp()
            cur.atom()  # entry-type-req: priv / shared / all
            cur.sp()
        return SearchKey("MODSEQ", (cur.number(),))
    raise cur.error(f"Unknown search key {word[:30]!r}")


def parse_search_program(cur: Cursor) -> SearchKey:
    """The search-key list up to the end of the command (SEARCH, SORT, THREAD)."""
    keys = [parse_search_key(cur)]
    while not cur.at_end():
        cur.sp()
        keys.append(parse_search_key(cur))
    key = keys[0] if len(keys) == 1 else SearchKey("AND", tuple(keys))
    if count_keys(key) > MAX_SEARCH_KEYS:
        raise cur.error(f"Search program too large (more than {MAX_SEARCH_KEYS} keys)")
    return key


def count_keys(key: SearchKey) -> int:
    """Nodes in a search program (iterative: depth is bounded anyway)."""
    n, todo = 0, [key]
    while todo:
        k = todo.pop()
        n += 1
        todo.extend(a for a in k.args if isinstance(a, SearchKey))
    return n
