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
    assert v.uids == [3, 9]
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
    assert lines(v.drain()) == [b"* 3 FETCH (FLAGS (\\Seen) MODSEQ (15))\r\n"]
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
    v.note_own_flags([MessageMeta(5, frozenset({"\\Deleted"}), 30)])
    assert v.flags[5] == {"\\Deleted"} and v.highestmodseq == 30
