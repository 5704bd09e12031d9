"""The selected mailbox as one session sees it: seq ↔ UID map and pending updates.

Pure data structure: store change events go in (:meth:`SelectedView.queue`),
untagged responses come out (:meth:`SelectedView.drain`) when the current
command allows them. RFC 3501 §7.4.1: EXPUNGE must not be sent while a
FETCH, STORE or SEARCH by sequence number runs (UID variants are fine), so
expunges wait in the queue until a command permits them.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from .proto.response import Untagged
from .proto.seqset import SequenceSet
from .store_api import (
    Change,
    FlagsChanged,
    MessageAdded,
    MessageExpunged,
    MessageMeta,
    SelectResult,
)

__all__ = ["SelectedView", "flag_list"]

_RECENT = frozenset({"\\Recent"})


def flag_list(flags: Iterable[str]) -> str:
    return "(" + " ".join(sorted(flags)) + ")"


class SelectedView:
    """UIDs in ascending order; sequence number ``n`` is ``uids[n-1]`` (RFC 3501 §2.3.1.2)."""

    def __init__(
        self,
        result: SelectResult,
        *,
        condstore: bool = False,
        qresync: bool = False,
    ) -> None:
        self.mailbox_id = result.mailbox_id
        self.uidvalidity = result.uidvalidity
        self.uidnext = result.uidnext
        self.highestmodseq = result.highestmodseq
        self.readonly = result.readonly
        self.condstore = condstore or qresync  # RFC 7162 §3.2.3: QRESYNC implies CONDSTORE
        self.qresync = qresync
        ordered = sorted(result.messages, key=lambda m: m.uid)
        self.uids: list[int] = [m.uid for m in ordered]
        self.flags: dict[int, frozenset[str]] = {m.uid: m.flags for m in ordered}
        self.modseqs: dict[int, int] = {m.uid: m.modseq for m in ordered}
        self._pending: list[Change] = []
        # \Recent (RFC 3501 §2.3.2): UID intervals [lo, hi) this session owns, and the
        # UID below which new arrivals have already been claimed (or offered)
        self._recent: list[tuple[int, int]] = []
        self.claimed_to = result.uidnext
        if result.recent_from is not None and result.recent_from < result.uidnext:
            self._recent.append((result.recent_from, result.uidnext))
        self._recent_sent = self.recent_count()

    # -- mapping ---------------------------------------------------------------------
    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def uid_of(self, seq: int) -> int:
        return self.uids[seq - 1]

    def resolve(self, seqset: SequenceSet, uid: bool, saved: Iterable[int] = ()) -> list[int]:
        """UIDs addressed by a set, ascending. ``saved`` backs ``$`` (RFC 5182)."""
        if seqset.saved:
            present = set(self.uids)
            return sorted(u for u in saved if u in present)
        if not self.uids:
            return []
        if uid:
            # RFC 3501 §6.4.8: "*" is the largest UID in use; ranges are unordered
            out: set[int] = set()
            for a, b in seqset.bounds(self.uids[-1]):
                lo = bisect.bisect_left(self.uids, a)
                hi = bisect.bisect_right(self.uids, b)
                out.update(self.uids[lo:hi])
            return sorted(out)
        return [self.uids[n - 1] for n in seqset.iter(len(self.uids))]

    def valid_seqset(self, seqset: SequenceSet) -> bool:
        """RFC 3501 §9: a sequence number beyond EXISTS is an error (BAD)."""
        return all(
            (lo is None or lo <= len(self.uids)) and (hi is None or hi <= len(self.uids))
            for lo, hi in seqset.ranges
        )

    # -- \Recent ----------------------------------------------------------------------
    def add_recent(self, lo: int, hi: int) -> None:
        """This session now owns UIDs [lo, hi) as \\Recent."""
        if lo < hi:
            self._recent.append((lo, hi))
            self._recent.sort()

    def is_recent(self, uid: int) -> bool:
        for lo, hi in self._recent:
            if lo <= uid < hi:
                return True
        return False

    def flags_of(self, uid: int) -> frozenset[str]:
        """The message's flags as this session reports them (with \\Recent)."""
        f = self.flags[uid]
        return f | _RECENT if self._recent and self.is_recent(uid) else f

    def recent_count(self) -> int:
        n = 0
        for lo, hi in self._recent:
            n += bisect.bisect_left(self.uids, hi) - bisect.bisect_left(self.uids, lo)
        return n

    def unclaimed(self, changes: Iterable[Change]) -> int | None:
        """The UID up to which new arrivals in ``changes`` still need claiming, or None."""
        top = max(
            (ch.uid for ch in changes if isinstance(ch, MessageAdded) and ch.uid >= self.claimed_to),
            default=None,
        )
        return None if top is None else top + 1

    def _recent_update(self) -> list[Untagged]:
        n = self.recent_count()
        if n == self._recent_sent:
            return []
        self._recent_sent = n
        return [Untagged(f"{n} RECENT")]

    # -- updates ---------------------------------------------------------------------
    def queue(self, changes: Iterable[Change]) -> None:
        """Accept store change events (from NOTIFY, another session, or our own writes)."""
        self._pending.extend(changes)

    def note_own_flags(self, metas: Iterable[MessageMeta]) -> None:
        """Record flags our own STORE set (its FETCH replies are built by the caller)."""
        for m in metas:
            if m.uid in self.flags:
                self.flags[m.uid] = m.flags
                self.modseqs[m.uid] = m.modseq
                self.highestmodseq = max(self.highestmodseq, m.modseq)

    def drain(self, allow_expunge: bool = True) -> list[Untagged]:
        """Apply queued changes and return the untagged responses to send.

        Order: EXPUNGE/VANISHED first (only if allowed), then EXISTS for new
        messages, then FETCH for flag changes of messages still present.
        """
        keep: list[Change] = []
        expunged: list[int] = []
        added: list[MessageAdded] = []
        flag_changes: dict[int, FlagsChanged] = {}
        for ch in self._pending:
            if isinstance(ch, MessageExpunged):
                if allow_expunge:
                    expunged.append(ch.uid)
                else:
                    keep.append(ch)
            elif isinstance(ch, MessageAdded):
                added.append(ch)
            else:
                flag_changes[ch.uid] = ch
            self.highestmodseq = max(self.highestmodseq, ch.modseq)
        self._pending = keep
        out: list[Untagged] = []
        out += self._apply_expunges(expunged)
        out += self._apply_added(added)
        out += self._recent_update()
        for uid, ch in sorted(flag_changes.items()):
            seq = self.seq_of(uid)
            if (
                seq is None
                or self.flags.get(uid) == ch.flags
                and self.modseqs.get(uid) == ch.modseq
            ):
                continue
            self.flags[uid] = ch.flags
            self.modseqs[uid] = ch.modseq
            items = f"FLAGS {flag_list(self.flags_of(uid))}"
            if self.qresync:
                items = f"UID {uid} " + items  # RFC 7162 §3.2.4: UID in unsolicited FETCH
            if self.condstore:
                items += f" MODSEQ ({ch.modseq})"  # RFC 7162 §3.1.4
            out.append(Untagged(f"{seq} FETCH ({items})"))
        return out

    def _apply_expunges(self, uids: list[int]) -> list[Untagged]:
        present = sorted({u for u in uids if u in self.flags}, reverse=True)
        if not present:
            return []
        out: list[Untagged] = []
        for uid in present:
            seq = self.seq_of(uid)
            assert seq is not None
            del self.uids[seq - 1]
            del self.flags[uid]
            self.modseqs.pop(uid, None)
            if not self.qresync:
                # descending order: no renumbering between the lines (RFC 3501 §7.4.1)
                out.append(Untagged(f"{seq} EXPUNGE"))
        if self.qresync:  # RFC 7162 §3.2.10: VANISHED replaces EXPUNGE
            out.append(Untagged(f"VANISHED {SequenceSet.from_numbers(present)}"))
        return out

    def _apply_added(self, added: list[MessageAdded]) -> list[Untagged]:
        # the same arrival can be queued twice (hub push, then NOOP's own query)
        fresh = {a.uid: a for a in added if a.uid not in self.flags}
        if not fresh:
            return []
        for _, a in sorted(fresh.items()):
            if self.uids and a.uid < self.uids[-1]:
                bisect.insort(self.uids, a.uid)  # should not happen: UIDs only grow
            else:
                self.uids.append(a.uid)
            self.flags[a.uid] = a.flags
            self.modseqs[a.uid] = a.modseq
            self.uidnext = max(self.uidnext, a.uid + 1)
        return [Untagged(f"{len(self.uids)} EXISTS")]

    def expunge_now(self, uids: Iterable[int]) -> list[Untagged]:
        """Our own EXPUNGE / MOVE: apply at once (those commands allow it)."""
        return self._apply_expunges(list(uids)) + self._recent_update()
