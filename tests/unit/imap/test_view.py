"""Selected-mailbox view: seq ↔ UID, EXPUNGE / EXISTS / FETCH / VANISHED generation."""

from mailrelay.imap.proto import SequenceSet
from mailrelay.imap.store_api import (
    FlagsChanged,
    MessageAdded,
    MessageExpunged,
    MessageMeta,
    SelectResult,
)
from mailrelay.imap.view import SelectedView


def make_view(**kw) -> SelectedView:
    msgs = [MessageMeta(u, frozenset(), 1) for u in (3, 5, 9, 12)]
    return SelectedView(SelectResult(1, 77, 13, 10, msgs), **kw)


def lines(out) -> list[bytes]:
    return [u.to_bytes() for u in out]


def test_mapping_and_resolve() -> None:
    v = make_view()
    assert v.exists == 4
    assert v.seq_of(9) == 3 and v.seq_of(4) is None
    assert v.uid_of(1) == 3
    assert v.resolve(SequenceSet.parse("2:*"), uid=False) == [5, 9, 12]
    assert v.resolve(SequenceSet.parse("4:10"), uid=True) == [5, 9]
    assert v.resolve(SequenceSet.parse("100:*"), uid=True) == [12]  # RFC 3501 §6.4.8
    assert v.resolve(SequenceSet.parse("*:2"), uid=False) == [5, 9, 12]
    assert v.resolve(SequenceSet.parse("$"), uid=False, saved=[9, 99]) == [9]
    assert v.valid_seqset(SequenceSet.parse("1:4"))
    assert not v.valid_seqset(SequenceSet.parse("5"))


def test_expunge_sent_in_descending_order() -> None:
    v = make_view()
    v.queue([MessageExpunged(5, 11), MessageExpunged(12, 12)])
    assert lines(v.drain()) == [b"* 4 EXPUNGE\r\n", b"* 2 EXPUNGE\r\n"]
    assert list(v.uids) == [3, 9]
    assert v.highestmodseq == 12


def test_expunge_held_back_during_fetch() -> None:
    v = make_view()
    v.queue([MessageExpunged(5, 11), MessageAdded(20, frozenset(), 12)])
    assert lines(v.drain(allow_expunge=False)) == [b"* 5 EXISTS\r\n"]
    assert v.seq_of(5) == 2
    assert lines(v.drain()) == [b"* 2 EXPUNGE\r\n"]


def test_flag_changes_and_condstore_qresync() -> None:
    v = make_view(condstore=True)
    v.queue([FlagsChanged(9, frozenset({"\\Seen"}), 15)])
    # RFC 7162 §3.1: UID and MODSEQ in every unsolicited FETCH once CONDSTORE is on
    assert lines(v.drain()) == [b"* 3 FETCH (UID 9 FLAGS (\\Seen) MODSEQ (15))\r\n"]
    q = make_view(qresync=True)
    q.queue(
        [FlagsChanged(9, frozenset({"\\Seen"}), 15), MessageExpunged(3, 16), MessageExpunged(5, 16)]
    )
    assert lines(q.drain()) == [
        b"* VANISHED 3,5\r\n",
        b"* 1 FETCH (UID 9 FLAGS (\\Seen) MODSEQ (15))\r\n",
    ]


def test_unknown_and_duplicate_events_are_ignored() -> None:
    v = make_view()
    v.queue(
        [
            MessageExpunged(999, 11),
            MessageAdded(3, frozenset(), 1),
            FlagsChanged(999, frozenset(), 2),
        ]
    )
    assert v.drain() == []


def test_own_expunge_and_store() -> None:
    v = make_view()
    assert lines(v.expunge_now([3])) == [b"* 1 EXPUNGE\r\n"]
    assert v.note_own_flags([MessageMeta(5, frozenset({"\\Deleted"}), 30)]) == []
    # the batch that later carries our own change (and the expunge) repeats nothing
    v.queue([MessageExpunged(3, 29), FlagsChanged(5, frozenset({"\\Deleted"}), 30)])
    assert v.drain() == [] and v.highestmodseq == 30


# -- convergence (issue 18 item 2) ---------------------------------------------------


def test_a_late_older_batch_neither_undoes_an_expunge_nor_overwrites_flags() -> None:
    v = make_view(condstore=True)
    # the newer batch first: 5 expunged at 14, 9 flagged at 13
    v.queue([FlagsChanged(9, frozenset({"\\Flagged"}), 13), MessageExpunged(5, 14)])
    assert lines(v.drain()) == [
        b"* 2 EXPUNGE\r\n",
        b"* 2 FETCH (UID 9 FLAGS (\\Flagged) MODSEQ (13))\r\n",
    ]
    # then an older batch (computed from modseq 10 before those changes) arrives
    v.queue([FlagsChanged(5, frozenset({"\\Seen"}), 11), FlagsChanged(9, frozenset(), 12)])
    assert v.drain() == []
    assert list(v.uids) == [3, 9, 12] and v.highestmodseq == 14


def test_exists_grows_only_by_really_new_uids() -> None:
    v = make_view()
    # 4 was never in this view and is below the view's highest UID: not an arrival
    v.queue([MessageAdded(4, frozenset(), 11), MessageAdded(13, frozenset(), 12)])
    assert lines(v.drain()) == [b"* 5 EXISTS\r\n"]
    # the same arrival again (hub push, then NOOP's own query): nothing new
    v.queue([MessageAdded(13, frozenset(), 12)])
    assert v.drain() == []
    # an arrival expunged before it was announced is never announced
    v.queue([MessageAdded(14, frozenset(), 13), MessageExpunged(14, 15)])
    assert v.drain() == [] and v.exists == 5
    v.queue([MessageAdded(14, frozenset(), 13)])  # a late older batch
    assert v.drain() == [] and list(v.uids) == [3, 5, 9, 12, 13]


def test_own_expunge_is_final_even_against_a_stale_batch() -> None:
    v = make_view()
    assert lines(v.expunge_now([9])) == [b"* 3 EXPUNGE\r\n"]
    # a batch computed before our EXPUNGE committed still shows 9 with new flags
    v.queue([FlagsChanged(9, frozenset({"\\Deleted"}), 11)])
    assert v.drain() == [] and list(v.uids) == [3, 5, 12]


def test_own_store_reply_is_not_followed_by_older_flags() -> None:
    v = make_view(condstore=True)
    v.queue([FlagsChanged(5, frozenset({"\\Seen"}), 11)])  # another session, not yet sent
    v.note_own_flags([MessageMeta(5, frozenset({"\\Seen", "\\Flagged"}), 12)])
    assert v.drain() == []  # the STORE reply (built by the caller) already has modseq 12
    assert v.highestmodseq == 11  # only what is known to be complete


def test_new_keywords_are_announced_with_flags_and_permanentflags() -> None:
    v = make_view(condstore=True)
    out = lines(v.drain())
    assert out == []
    v.queue([FlagsChanged(9, frozenset({"$Important"}), 11)])
    out = lines(v.drain())
    assert out[0] == b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Important)\r\n"
    assert out[1].startswith(b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen")
    assert b"$Important \\*)]" in out[1]
    assert out[2] == b"* 3 FETCH (UID 9 FLAGS ($Important) MODSEQ (11))\r\n"
    # known now: no second announcement
    assert v.note_own_flags([MessageMeta(3, frozenset({"$Important"}), 12)]) == []
    assert len(v.note_own_flags([MessageMeta(3, frozenset({"$Later"}), 13)])) == 2


def test_idle_view_memory_is_four_bytes_per_message() -> None:
    msgs = [MessageMeta(u, frozenset({"\\Seen"}), u) for u in range(1, 3001)]
    v = SelectedView(SelectResult(1, 77, 3001, 3000, msgs))
    assert v.uids.itemsize == 4 and len(v.uids) == 3000
    assert not hasattr(v, "flags") and not hasattr(v, "modseqs")
