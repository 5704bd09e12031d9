"""Sequence sets: ``1:3,5,7:*`` (RFC 3501 §9 sequence-set) and ``$`` (RFC 5182)."""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .errors import ParseError

__all__ = ["SequenceSet"]

#: Largest number in a set: nz-number is a 32-bit unsigned (RFC 3501 §9).
MAX_NUMBER = 0xFFFFFFFF
#: items of at most 9 digits without leading zeros (so always <= MAX_NUMBER) or "*"
_NUM = r"(?:[1-9][0-9]{0,8}|\*)"
_PLAIN = re.compile(rf"{_NUM}(?::{_NUM})?(?:,{_NUM}(?::{_NUM})?)*")


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """Ranges ``(lo, hi)`` as written by the client; ``None`` stands for ``*``.

    ``saved`` is True for ``$`` (the SEARCHRES saved result).

    Membership tests (:meth:`contains`) use the ranges merged and sorted once per
    ``largest`` (cached on the instance), so a SEARCH over N messages with a set of
    K ranges costs O(K log K + N log K), not O(N K).
    """

    ranges: tuple[tuple[int | None, int | None], ...]
    saved: bool = False
    _merged: tuple[int, list[int], list[int]] | None = field(
        default=None, init=False, repr=False, compare=False, hash=False
    )

    @classmethod
    def parse(cls, text: str) -> SequenceSet:
        if text == "$":
            return cls((), saved=True)
        if not text:
            raise ParseError("Empty sequence set")
        if _PLAIN.fullmatch(text):  # the common shape, parsed without per-item checks
            out: list[tuple[int | None, int | None]] = []
            for item in text.split(","):
                lo_s, sep, hi_s = item.partition(":")
                lo = None if lo_s == "*" else int(lo_s)
                hi = (None if hi_s == "*" else int(hi_s)) if sep else lo
                out.append((lo, hi))
            return cls(tuple(out))
        ranges: list[tuple[int | None, int | None]] = []
        for item in text.split(","):
            lo_s, sep, hi_s = item.partition(":")
            lo = _num(lo_s)
            hi = _num(hi_s) if sep else lo
            ranges.append((lo, hi))
        return cls(tuple(ranges))

    @classmethod
    def from_numbers(cls, numbers: Iterable[int]) -> SequenceSet:
        """Compact a collection of numbers into ranges (``1,2,3,5`` → ``1:3,5``)."""
        ranges: list[tuple[int | None, int | None]] = []
        lo = hi = None
        for n in sorted(set(numbers)):
            if hi is not None and n == hi + 1:
                hi = n
                continue
            if lo is not None:
                ranges.append((lo, hi))
            lo = hi = n
        if lo is not None:
            ranges.append((lo, hi))
        return cls(tuple(ranges))

    def __str__(self) -> str:
        if self.saved:
            return "$"
        parts = []
        for lo, hi in self.ranges:
            a = "*" if lo is None else str(lo)
            b = "*" if hi is None else str(hi)
            parts.append(a if a == b else f"{a}:{b}")
        return ",".join(parts)

    def bounds(self, largest: int) -> list[tuple[int, int]]:
        """Ranges with ``*`` replaced by ``largest`` and each range ordered."""
        out = []
        for lo, hi in self.ranges:
            a = largest if lo is None else lo
            b = largest if hi is None else hi
            out.append((a, b) if a <= b else (b, a))
        return out

    def merged(self, largest: int) -> tuple[list[int], list[int]]:
        """Disjoint ascending ranges as parallel ``(starts, ends)`` lists (inclusive)."""
        cached = self._merged
        if cached is not None and cached[0] == largest:
            return cached[1], cached[2]
        starts: list[int] = []
        ends: list[int] = []
        for a, b in sorted(self.bounds(largest)):
            if ends and a <= ends[-1] + 1:
                if b > ends[-1]:
                    ends[-1] = b
            else:
                starts.append(a)
                ends.append(b)
        object.__setattr__(self, "_merged", (largest, starts, ends))
        return starts, ends

    def contains(self, n: int, largest: int) -> bool:
        starts, ends = self.merged(largest)
        i = bisect.bisect_right(starts, n) - 1
        return i >= 0 and n <= ends[i]

    def iter(self, largest: int) -> Iterator[int]:
        """Distinct numbers in ascending order, capped at ``largest`` (for seqs)."""
        starts, ends = self.merged(largest)
        for a, b in zip(starts, ends, strict=True):
            yield from range(max(a, 1), min(b, largest) + 1)

    def filter(self, values: Iterable[int], largest: int) -> list[int]:
        """Members of ``values`` (e.g. existing UIDs) that are in this set."""
        return [v for v in values if self.contains(v, largest)]


def _num(s: str) -> int | None:
    if s == "*":
        return None
    if not s.isdigit() or not s.isascii() or s[0] == "0":
        raise ParseError(f"Invalid sequence set number: {s[:20]!r}")
    n = int(s)
    if n > MAX_NUMBER:
        raise ParseError("Sequence number too large")
    return n
