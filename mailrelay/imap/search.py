"""Evaluate SEARCH programs over stored rows (RFC 3501 §6.4.4) and format results.

Pure: rows come from the store (``MessageRow``), the caller provides the
sequence numbers. Text matching is case-insensitive substring matching over
decoded text (RFC 2047 words, transfer encodings, charsets).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from mailrelay.mime.decode import decode_words, part_text
from mailrelay.mime.headers import parse_addresses, split_fields, strip_comments, unfold

from .proto.commands import SearchKey
from .proto.seqset import SequenceSet
from .store_api import MessageRow

__all__ = ["needs_content", "uses_modseq", "matches", "search", "search_response"]

_CONTENT_OPS = {"HEADER", "BODY", "TEXT", "SENTBEFORE", "SENTON", "SENTSINCE"}


def needs_content(key: SearchKey) -> bool:
    """True when raw bytes + structure must be loaded to evaluate ``key``."""
    if key.op in _CONTENT_OPS:
        return True
    return any(isinstance(a, SearchKey) and needs_content(a) for a in key.args)


def uses_modseq(key: SearchKey) -> bool:
    """RFC 7162 §3.1.5: a MODSEQ criterion makes the reply carry ``(MODSEQ n)``."""
    if key.op == "MODSEQ":
        return True
    return any(isinstance(a, SearchKey) and uses_modseq(a) for a in key.args)


class _Ctx:
    __slots__ = ("row", "seq", "max_seq", "max_uid", "saved", "_headers")

    def __init__(self, row: MessageRow, seq: int, max_seq: int, max_uid: int, saved: set[int]):
        self.row, self.seq, self.max_seq, self.max_uid, self.saved = (
            row,
            seq,
            max_seq,
            max_uid,
            saved,
        )
        self._headers: list[tuple[str, str]] | None = None

    def headers(self) -> list[tuple[str, str]]:
        if self._headers is None:
            raw, st = self.row.raw or b"", self.row.structure
            he = st["body"]["he"] if st else len(raw)
            self._headers = [
                (name, decode_words(unfold(raw, fs, fe)))
                for name, fs, fe in split_fields(raw, 0, he)
                if name
            ]
        return self._headers


_ADDRESS_FIELDS = frozenset({"from", "to", "cc", "bcc", "sender", "reply-to"})


def _addresses(value: str) -> str:
    """An address field as SEARCH FROM/TO/CC/BCC see it: display names and addr-specs,
    comments stripped (RFC 5322 §3.2.2: a comment is not part of the address)."""
    parsed = parse_addresses(value)
    if parsed is None:
        return strip_comments(value)
    out = []
    for name, _adl, mbox, host in parsed:
        if mbox is None and host is None:
            continue
        addr = f"{mbox or ''}@{host}" if host else (mbox or "")
        out.append(f"{name} <{addr}>" if name and addr else name or addr)
    return ", ".join(out)


def _contains(hay: str, needle: bytes) -> bool:
    return needle.decode("utf-8", "replace").casefold() in hay.casefold()


def _sent_date(ctx: _Ctx) -> date | None:
    for name, value in ctx.headers():
        if name == "date":
            try:
                return parsedate_to_datetime(value).date()
            except (TypeError, ValueError, IndexError):
                return None
    return None


def _internal_date(row: MessageRow) -> date:
    # RFC 3501 §6.4.4: dates compare "disregarding time and timezone"
    d = row.internaldate
    return d.date() if isinstance(d, datetime) else d


def _texts(raw: bytes, part: dict[str, Any]) -> Iterable[str]:
    if "parts" in part:
        for child in part["parts"]:
            yield from _texts(raw, child)
    elif "msg" in part:
        yield raw[part["msg"]["hs"] : part["msg"]["he"]].decode("utf-8", "replace")
        yield from _texts(raw, part["msg"])
    elif part["type"].lower() in ("text", "message"):
        yield part_text(raw, part)


def _body_matches(ctx: _Ctx, needle: bytes) -> bool:
    raw, st = ctx.row.raw, ctx.row.structure
    if raw is None or st is None:
        return False
    return any(_contains(t, needle) for t in _texts(raw, st["body"]))


def matches(key: SearchKey, ctx: _Ctx) -> bool:
    op, args, row = key.op, key.args, ctx.row
    if op == "ALL":
        return True
    if op == "AND":
        return all(matches(k, ctx) for k in args)  # type: ignore[arg-type]
    if op == "OR":
        return matches(args[0], ctx) or matches(args[1], ctx)  # type: ignore[arg-type]
    if op == "NOT":
        return not matches(args[0], ctx)  # type: ignore[arg-type]
    if op == "FLAG":
        return args[0] in row.flags
    if op in ("SEQ", "UID"):
        s = args[0]
        assert isinstance(s, SequenceSet)
        if s.saved:
            return row.uid in ctx.saved
        if op == "SEQ":
            return s.contains(ctx.seq, ctx.max_seq)
        return s.contains(row.uid, ctx.max_uid)
    if op == "LARGER":
        return row.size > args[0]  # type: ignore[operator]
    if op == "SMALLER":
        return row.size < args[0]  # type: ignore[operator]
    if op == "MODSEQ":
        return row.modseq >= args[0]  # type: ignore[operator]
    if op in ("BEFORE", "ON", "SINCE"):
        return _cmp(op, _internal_date(row), args[0])  # type: ignore[arg-type]
    if op in ("SENTBEFORE", "SENTON", "SENTSINCE"):
        d = _sent_date(ctx)
        return d is not None and _cmp(op[4:], d, args[0])  # type: ignore[arg-type]
    if op == "HEADER":
        name, needle = str(args[0]).lower(), args[1]
        assert isinstance(needle, bytes)
        # RFC 3501 §6.4.4: HEADER with an empty string matches any message with the field
        if name in _ADDRESS_FIELDS and needle:
            return any(n == name and _contains(_addresses(v), needle) for n, v in ctx.headers())
        return any(n == name and _contains(v, needle) for n, v in ctx.headers())
    if op == "BODY":
        return _body_matches(ctx, args[0])  # type: ignore[arg-type]
    if op == "TEXT":
        needle = args[0]
        assert isinstance(needle, bytes)
        return any(_contains(f"{n}: {v}", needle) for n, v in ctx.headers()) or _body_matches(
            ctx, needle
        )
    return False


def _cmp(op: str, d: date, ref: date) -> bool:
    if op == "BEFORE":
        return d < ref
    if op == "ON":
        return d == ref
    return d >= ref  # SINCE


def search(
    key: SearchKey,
    rows: Sequence[MessageRow],
    seqs: Sequence[int],
    max_seq: int,
    max_uid: int,
    saved: Iterable[int] = (),
) -> list[MessageRow]:
    """Rows matching ``key``; ``seqs[i]`` is the sequence number of ``rows[i]``."""
    saved_set = set(saved)
    return [
        row
        for row, seq in zip(rows, seqs, strict=True)
        if matches(key, _Ctx(row, seq, max_seq, max_uid, saved_set))
    ]


def search_response(
    tag: str,
    numbers: Sequence[int],
    *,
    uid: bool,
    returns: tuple[str, ...] | None,
    highest_modseq: int | None = None,
    modseqs: Sequence[int] | None = None,
) -> bytes:
    """``SEARCH 1 2 3`` or RFC 4731 ``ESEARCH (TAG "t") UID MIN 1 ...`` (without ``* ``).

    ``modseqs`` (parallel to ``numbers``) are the hits' MODSEQs when the search used
    MODSEQ; ``highest_modseq`` is the older form (one value for every result option).
    """
    if modseqs is not None and highest_modseq is None and numbers:
        highest_modseq = max(modseqs)
    mod = f" (MODSEQ {highest_modseq})" if highest_modseq is not None and numbers else ""
    if returns is None:
        return ("SEARCH" + "".join(f" {n}" for n in numbers) + mod).encode()
    opts = set(returns) or {"ALL"}  # RFC 4731 §3.1: RETURN () means ALL
    out = f'ESEARCH (TAG "{tag}")' + (" UID" if uid else "")
    if numbers:
        lo, hi = min(numbers), max(numbers)
        if "MIN" in opts:
            out += f" MIN {lo}"
        if "MAX" in opts:
            out += f" MAX {hi}"
        if "ALL" in opts:
            out += f" ALL {SequenceSet.from_numbers(numbers)}"
        if modseqs is not None and not opts & {"ALL", "COUNT"}:
            # RFC 4731 §3.2 / RFC 7162 §3.1.5: with only MIN and/or MAX the MODSEQ is
            # that of the message(s) returned, not of every match
            by = dict(zip(numbers, modseqs, strict=True))
            highest_modseq = max(by[n] for n, o in ((lo, "MIN"), (hi, "MAX")) if o in opts)
    if "COUNT" in opts:
        out += f" COUNT {len(numbers)}"
    if highest_modseq is not None and numbers:
        out += f" MODSEQ {highest_modseq}"  # RFC 7162 §3.1.5
    return out.encode()
