"""The selected mailbox as one session sees it: seq ↔ UID map and pending updates.

Pure data structure: store change events go in (:meth:`SelectedView.queue`),
untagged responses come out (:meth:`SelectedView.drain`) when the current
command allows them. RFC 3501 §7.4.1: EXPUNGE must not be sent while a
FETCH, STORE or SEARCH by sequence number runs (UID variants are fine), so
expunges wait until a command permits them.

Convergence: every batch handed to :meth:`queue` is a *complete* list of the
mailbox's changes after some MODSEQ no higher than :attr:`synced` (what
``MailStore.changes_since`` returns). A change is taken only if its MODSEQ is
above :attr:`synced` (and above what our own STORE already reported for that
UID), so an older batch arriving late can neither undo an expunge nor put
older flags over newer ones, and EXISTS grows only by UIDs above every UID
this view has held (RFC 3501 §2.3.1.1: UIDs only grow). MODSEQs a client sees
for a message never go backwards (RFC 7162 §3.1.1).

Memory: per message the view holds only its UID in an ``array('I')`` (4 bytes);
sequence numbers are computed (bisect) and flags are never kept: the store's
events and rows carry them. Pending updates are bounded by the real changes.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Collection, Iterable, Sequence

from .proto.response import Untagged, UntaggedStatus
from .proto.seqset import SequenceSet
from .store_api import (
    Change,
    FlagsChanged,
    KeywordsDefined,
    MessageAdded,
    MessageExpunged,
    MessageMeta,
    SelectResult,
)

__all__ = ["SelectedView", "flag_list", "keywords_of"]

_RECENT = frozenset({"\\Recent"})
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


def flag_list(flags: Iterable[str]) -> str:
    return "(" + " ".join(sorted(flags)) + ")"


def keywords_of(flags: Iterable[str]) -> set[str]:
    """The keywords (RFC 3501 §2.3.2: flags not starting with a backslash)."""
    return {f for f in flags if not f.startswith("\\")}


class SelectedView:
    """UIDs in ascending order; sequence number ``n`` is ``uids[n-1]`` (RFC 3501 §2.3.1.2).

    ``extensions`` is the session's set of enabled extensions (shared, not copied:
    CONDSTORE can be enabled while the mailbox is selected, RFC 7162 §3.1).
    """

    def __init__(
        self,
        result: SelectResult,
        *,
        extensions: Collection[str] | None = None,
        condstore: bool = False,
        qresync: bool = False,
    ) -> None:
        if extensions is None:
            extensions = {x for x, on in (("CONDSTORE", condstore), ("QRESYNC", qresync)) if on}
        self._ext = extensions
        self.mailbox_id = result.mailbox_id
        self.uidvalidity = result.uidvalidity
        self.uidnext = result.uidnext
        self.readonly = result.readonly
        self.uids: array[int] = array("I", sorted(m.uid for m in result.messages))
        #: every change up to this MODSEQ has been taken in (announced or pending)
        self.synced = result.highestmodseq
        #: the highest MODSEQ this session has reported (HIGHESTMODSEQ)
        self.highestmodseq = result.highestmodseq
        # EXISTS grows only by UIDs above this (the highest UID this view ever held)
        self._uid_top = max(result.uidnext - 1, self.uids[-1] if self.uids else 0)
        # RFC 3501 §7.2.6: the mailbox's keyword list (every keyword ever used in it),
        # plus any a message holds (a store without a list)
        self.keywords: set[str] = set(result.keywords)
        #: keywords of the mailbox's list taken in, not yet announced with FLAGS
        self._kw_pending: set[str] = set()
        for m in result.messages:
            if m.flags - set(SYSTEM_FLAGS):
                self.keywords |= keywords_of(m.flags)
        # accepted, not yet announced: arrivals, flag states (uid → (flags, modseq)),
        # expunges (uid → modseq)
        self._new: set[int] = set()
        self._flags: dict[int, tuple[frozenset[str], int]] = {}
        self._gone: dict[int, int] = {}
        # what our own STORE/EXPUNGE already did, until a batch from the store covers it
        self._own_flags: dict[int, int] = {}
        self._own_gone: set[int] = set()
        # \Recent (RFC 3501 §2.3.2): UID intervals [lo, hi) this session owns, and the
        # UID below which new arrivals have already been claimed (or offered)
        self._recent: list[tuple[int, int]] = []
        self.claimed_to = result.uidnext
        if result.recent_from is not None and result.recent_from < result.uidnext:
            self._recent.append((result.recent_from, result.uidnext))
        self._recent_sent = self.recent_count()

    @property
    def condstore(self) -> bool:
        # RFC 7162 §3.2.3: QRESYNC implies CONDSTORE
        return "CONDSTORE" in self._ext or "QRESYNC" in self._ext

    @property
    def qresync(self) -> bool:
        return "QRESYNC" in self._ext

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
            return sorted(u for u in set(saved) if self.seq_of(u) is not None)
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
        return any(lo <= uid < hi for lo, hi in self._recent)

    def with_recent(self, uid: int, flags: frozenset[str]) -> frozenset[str]:
        """``flags`` as this session reports them (with \\Recent when it owns it)."""
        return flags | _RECENT if self._recent and self.is_recent(uid) else flags

    def recent_count(self) -> int:
        n = 0
        for lo, hi in self._recent:
            n += bisect.bisect_left(self.uids, hi) - bisect.bisect_left(self.uids, lo)
        return n

    def unclaimed(self, changes: Iterable[Change]) -> int | None:
        """The UID up to which new arrivals in ``changes`` still need claiming, or None."""
        top = max(
            (
                ch.uid
                for ch in changes
                if isinstance(ch, (MessageAdded, FlagsChanged))
                and ch.uid >= self.claimed_to
                and ch.modseq > self.synced
            ),
            default=None,
        )
        return None if top is None else top + 1

    def _recent_update(self) -> list[Untagged]:
        n = self.recent_count()
        if n == self._recent_sent:
            return []
        self._recent_sent = n
        return [Untagged(f"{n} RECENT")]

    # -- taking changes in --------------------------------------------------------------
    def queue(self, changes: Sequence[Change]) -> None:
        """Take in a complete batch of changes after some MODSEQ <= :attr:`synced`."""
        top = self.synced
        for ch in sorted(changes, key=lambda ch: ch.modseq):
            if ch.modseq <= self.synced:
                continue  # already taken in from an earlier (or newer) batch
            top = max(top, ch.modseq)
            if isinstance(ch, KeywordsDefined):
                # the list only grows; announced by the next drain, before any FETCH
                self._kw_pending |= set(ch.keywords) - self.keywords
                continue
            uid = ch.uid
            if isinstance(ch, MessageExpunged):
                self._own_gone.discard(uid)
                self._new.discard(uid)
                self._flags.pop(uid, None)
                if self.seq_of(uid) is not None:
                    self._gone[uid] = ch.modseq
                continue
            if uid in self._gone or uid in self._own_gone:
                continue  # RFC 3501 §7.4.1: an expunge is final
            if self._own_flags.get(uid, 0) >= ch.modseq:
                continue  # our own STORE already reported this (or a newer) state
            held = self._flags.get(uid)
            if held is not None and held[1] >= ch.modseq:
                continue
            if self.seq_of(uid) is not None or uid in self._new:
                self._flags[uid] = (ch.flags, ch.modseq)
            elif uid > self._uid_top:
                self._new.add(uid)  # a message this view never held: an arrival
                self._flags[uid] = (ch.flags, ch.modseq)
            # else: a UID that went before we saw it (RFC 3501 §2.3.1.1: never reused)
        self.synced = top
        if self._own_flags:
            self._own_flags = {u: m for u, m in self._own_flags.items() if m > top}

    def note_own_flags(self, metas: Iterable[MessageMeta]) -> list[Untagged | UntaggedStatus]:
        """Record what our own STORE (or implicit \\Seen) did; the caller reports the
        FETCHes. Returns FLAGS/PERMANENTFLAGS lines for keywords seen for the first time."""
        fresh: set[str] = set()
        for m in metas:
            if self.seq_of(m.uid) is None:
                continue
            self._own_flags[m.uid] = max(self._own_flags.get(m.uid, 0), m.modseq)
            held = self._flags.get(m.uid)
            if held is not None and held[1] <= m.modseq:
                del self._flags[m.uid]  # older than what the STORE reply shows
            self.highestmodseq = max(self.highestmodseq, min(m.modseq, self._announceable()))
            fresh |= keywords_of(m.flags) - self.keywords
        return self._announce_keywords(fresh)

    # -- announcing ----------------------------------------------------------------------
    def _announceable(self) -> int:
        """The highest MODSEQ below every change still waiting to be announced."""
        waiting = [m for m in self._gone.values()]
        waiting += [m for _, m in self._flags.values()]
        return min(waiting, default=self.synced + 1) - 1

    def flag_lines(self) -> list[Untagged | UntaggedStatus]:
        """FLAGS and PERMANENTFLAGS with the mailbox's keywords (RFC 3501 §7.2.6, §7.1)."""
        names = " ".join([*SYSTEM_FLAGS, *sorted(self.keywords)])
        perm = "()" if self.readonly else f"({names} \\*)"
        return [
            Untagged(f"FLAGS ({names})"),
            UntaggedStatus("OK", "Flags permitted", f"PERMANENTFLAGS {perm}"),
        ]

    def keywords_for(self, flag_sets: Iterable[Iterable[str]]) -> list[Untagged | UntaggedStatus]:
        """FLAGS/PERMANENTFLAGS to send before a response that shows these flags, when
        one holds a keyword this session has not announced yet (RFC 3501 §7.2.6: the
        client learns the mailbox's flags from FLAGS before it meets them in FETCH)."""
        fresh: set[str] = set()
        for flags in flag_sets:
            fresh |= keywords_of(flags)
        return self._announce_keywords(fresh - self.keywords)

    def _announce_keywords(self, fresh: set[str]) -> list[Untagged | UntaggedStatus]:
        if not fresh:
            return []
        self.keywords |= fresh
        self._kw_pending -= fresh
        return self.flag_lines()

    def fetch_items(self, uid: int, flags: frozenset[str], modseq: int) -> str:
        """The items of an unsolicited (or flag-change) FETCH for ``uid``."""
        items = f"FLAGS {flag_list(self.with_recent(uid, flags))}"
        if self.condstore:
            # RFC 7162 §3.1: with CONDSTORE enabled, UID and MODSEQ in every such FETCH
            items = f"UID {uid} {items} MODSEQ ({modseq})"
        return items

    def drain(self, allow_expunge: bool = True) -> list[Untagged | UntaggedStatus]:
        """Announce what was taken in: the untagged responses to send now.

        Order: EXPUNGE/VANISHED first (only if allowed), then EXISTS for new
        messages, then FLAGS for new keywords, then FETCH for flag changes.
        """
        out: list[Untagged | UntaggedStatus] = []
        if allow_expunge and self._gone:
            gone, self._gone = list(self._gone), {}
            out += self._apply_expunges(gone)
        fresh: set[str] = set()
        if self._new:
            new, self._new = sorted(self._new), set()
            self.uids.extend(new)
            self._uid_top = max(self._uid_top, new[-1])
            self.uidnext = max(self.uidnext, new[-1] + 1)
            for uid in new:
                fresh |= keywords_of(self._flags.pop(uid, (frozenset(), 0))[0])
            out.append(Untagged(f"{len(self.uids)} EXISTS"))
        out += self._recent_update()
        pending, self._flags = self._flags, {}
        for _, (flags, _m) in pending.items():
            fresh |= keywords_of(flags)
        fresh |= self._kw_pending
        self._kw_pending = set()
        out += self._announce_keywords(fresh - self.keywords)
        for uid, (flags, modseq) in sorted(pending.items()):
            seq = self.seq_of(uid)
            if seq is not None:
                out.append(Untagged(f"{seq} FETCH ({self.fetch_items(uid, flags, modseq)})"))
        self.highestmodseq = max(self.highestmodseq, self._announceable())
        return out

    def _apply_expunges(self, uids: Iterable[int]) -> list[Untagged | UntaggedStatus]:
        present = sorted((u for u in set(uids) if self.seq_of(u) is not None), reverse=True)
        if not present:
            return []
        out: list[Untagged | UntaggedStatus] = []
        for uid in present:
            seq = self.seq_of(uid)
            if seq is None:
                continue
            del self.uids[seq - 1]
            self._flags.pop(uid, None)
            self._own_flags.pop(uid, None)
            if not self.qresync:
                # descending order: no renumbering between the lines (RFC 3501 §7.4.1)
                out.append(Untagged(f"{seq} EXPUNGE"))
        if self.qresync:  # RFC 7162 §3.2.10: VANISHED replaces EXPUNGE
            out.append(Untagged(f"VANISHED {SequenceSet.from_numbers(present)}"))
        return out

    def expunge_now(self, uids: Iterable[int]) -> list[Untagged | UntaggedStatus]:
        """Our own EXPUNGE / MOVE: apply at once (those commands allow it)."""
        uids = list(uids)
        for u in uids:
            self._gone.pop(u, None)
            if self.seq_of(u) is not None or u in self._new:
                # remembered until a batch reports the expunge: an older batch must not
                # bring it back (UIDs held are covered by _uid_top; arrivals not yet)
                self._own_gone.add(u)
            self._new.discard(u)  # EXPUNGE removes every \Deleted, announced or not
            self._flags.pop(u, None)
        return self._apply_expunges(uids) + self._recent_update()
