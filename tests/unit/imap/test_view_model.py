"""Model-based test of view convergence (issue 18 item 2), no sockets, no database.

A simulated store (rows with flags, MODSEQ, the MODSEQ they arrived at; expunged UIDs)
hands out complete change batches the way ``PgMailStore.changes_since`` does; batches
reach the view late and out of order (the change hub vs. the session's own NOOP), and
the session makes its own STORE/EXPUNGE. A client picture is built from the drained
responses only. At the end the picture must equal the store, and on the way: EXISTS
never below the count, EXPUNGE of an existing seq, no MODSEQ going back.
"""

from __future__ import annotations

import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailrelay.imap.store_api import (
    Change,
    FlagsChanged,
    MessageAdded,
    MessageExpunged,
    MessageMeta,
    SelectResult,
)
from mailrelay.imap.view import SelectedView

FLAGS = ("\\Seen", "\\Flagged", "$Work")


class Store:
    def __init__(self, n: int) -> None:
        self.modseq = n
        self.rows = {u: (frozenset(), u, u) for u in range(1, n + 1)}  # flags, modseq, added
        self.gone: dict[int, int] = {}
        self.uidnext = n + 1

    def _bump(self) -> int:
        self.modseq += 1
        return self.modseq

    def add(self) -> None:
        ms = self._bump()
        self.rows[self.uidnext] = (frozenset(), ms, ms)
        self.uidnext += 1

    def set_flags(self, uid: int, flags: frozenset[str]) -> MessageMeta | None:
        if uid not in self.rows or self.rows[uid][0] == flags:
            return None
        ms = self._bump()
        self.rows[uid] = (flags, ms, self.rows[uid][2])
        return MessageMeta(uid, flags, ms)

    def expunge(self, uid: int) -> bool:
        if uid not in self.rows:
            return False
        del self.rows[uid]
        self.gone[uid] = self._bump()
        return True

    def changes_since(self, floor: int) -> list[Change]:
        out: list[Change] = []
        for uid, (flags, ms, added) in self.rows.items():
            if ms > floor:
                kind = MessageAdded if added > floor else FlagsChanged
                out.append(kind(uid, flags, ms))
        out += [MessageExpunged(uid, ms) for uid, ms in self.gone.items() if ms > floor]
        return sorted(out, key=lambda c: c.modseq)

    def select(self) -> SelectResult:
        metas = [MessageMeta(u, f, m) for u, (f, m, _) in sorted(self.rows.items())]
        return SelectResult(1, 7, self.uidnext, self.modseq, metas)


class Picture:
    def __init__(self, result: SelectResult) -> None:
        self.uids: list[int | None] = [m.uid for m in result.messages]
        self.flags = {m.uid: m.flags for m in result.messages}
        self.modseq = {m.uid: m.modseq for m in result.messages}

    def fetch(self, uid: int, flags: frozenset[str], modseq: int) -> None:
        assert modseq >= self.modseq.get(uid, 0), "MODSEQ went back"
        self.flags[uid], self.modseq[uid] = flags, modseq

    def absorb(self, lines: list[bytes]) -> None:
        for line in lines:
            if m := re.match(rb"\* (\d+) EXISTS", line):
                n = int(m.group(1))
                assert n >= len(self.uids), "EXISTS below the count"
                self.uids += [None] * (n - len(self.uids))
            elif m := re.match(rb"\* (\d+) EXPUNGE", line):
                n = int(m.group(1))
                assert 1 <= n <= len(self.uids)
                self.uids.pop(n - 1)
            elif m := re.match(rb"\* (\d+) FETCH \(UID (\d+) FLAGS \(([^)]*)\) MODSEQ \((\d+)\)", line):
                seq, uid = int(m.group(1)), int(m.group(2))
                assert self.uids[seq - 1] in (None, uid)
                self.uids[seq - 1] = uid
                flags = frozenset(m.group(3).decode().split())
                self.fetch(uid, flags, int(m.group(4)))

    def learn(self, store: Store, view: SelectedView) -> None:
        """FETCH the UIDs (and flags) of announced but unknown messages."""
        for i, u in enumerate(self.uids):
            if u is None:
                uid = view.uid_of(i + 1)
                self.uids[i] = uid
                if uid in store.rows:
                    flags, ms, _ = store.rows[uid]
                    self.fetch(uid, flags, ms)


OPS = st.lists(
    st.tuples(
        st.sampled_from(["add", "flag", "expunge", "snap", "deliver", "drain", "own_store",
                         "own_expunge", "own_expunge_any", "noop"]),
        st.integers(0, 1000),
        st.sets(st.sampled_from(FLAGS)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(OPS)
# a batch computed before a newer change, delivered after it
@example([("flag", 1, {"\\Seen"}), ("snap", 0, set()), ("flag", 1, set()), ("noop", 0, set())])
# an arrival expunged by our own EXPUNGE while an older batch still shows it
@example([("add", 0, set()), ("snap", 0, set()), ("noop", 0, set()), ("own_expunge", 5, set()),
          ("deliver", 0, set()), ("drain", 0, set())])
@example([("add", 0, set()), ("snap", 0, set()), ("noop", 0, set()), ("add", 0, set()),
          ("snap", 0, set()), ("deliver", 1, set()), ("own_expunge_any", 6, set()),
          ("deliver", 0, set()), ("drain", 0, set())])
def test_view_converges_whatever_order_batches_arrive(ops: list) -> None:
    store = Store(5)
    result = store.select()
    view = SelectedView(result, condstore=True)
    pic = Picture(result)
    in_flight: list[list[Change]] = []
    for op, n, flags in ops:
        uids = sorted(store.rows)
        if op == "add":
            store.add()
        elif op == "flag" and uids:
            store.set_flags(uids[n % len(uids)], frozenset(flags))
        elif op == "expunge" and uids:
            store.expunge(uids[n % len(uids)])
        elif op == "snap":  # the hub computes a batch from what the view has seen
            in_flight.append(store.changes_since(view.synced))
        elif op == "deliver" and in_flight:
            view.queue(in_flight.pop(n % len(in_flight)))
        elif op == "drain":
            pic.absorb([x.to_bytes() for x in view.drain(allow_expunge=n % 2 == 0)])
        elif op == "own_store" and view.exists:
            uid = view.uid_of(n % view.exists + 1)
            meta = store.set_flags(uid, frozenset(flags))
            if meta is not None:
                view.note_own_flags([meta])
                pic.fetch(uid, meta.flags, meta.modseq)  # the STORE reply
        elif op == "own_expunge_any" and uids:  # EXPUNGE takes unannounced ones too
            uid = uids[n % len(uids)]
            store.expunge(uid)
            pic.absorb([x.to_bytes() for x in view.expunge_now([uid])])
        elif op == "own_expunge" and view.exists:
            uid = view.uid_of(n % view.exists + 1)
            if store.expunge(uid):
                pic.absorb([x.to_bytes() for x in view.expunge_now([uid])])
        elif op == "noop":
            view.queue(store.changes_since(view.synced))
            pic.absorb([x.to_bytes() for x in view.drain()])
        pic.learn(store, view)
    for batch in in_flight:  # late batches after everything else
        view.queue(batch)
    view.queue(store.changes_since(view.synced))
    pic.absorb([x.to_bytes() for x in view.drain()])
    pic.learn(store, view)
    assert list(view.uids) == sorted(store.rows)
    assert pic.uids == sorted(store.rows)
    for uid, (flags, ms, _) in store.rows.items():
        assert pic.flags[uid] == flags and pic.modseq[uid] == ms, uid
    assert view.highestmodseq == store.modseq
