"""The mailbox keyword list: spelling, bounds (mailrelay.imap.keywords) and how the view
announces a list that grew (KeywordsDefined), RFC 3501 §7.2.6."""

import pytest

from mailrelay.imap.keywords import MAX_KEYWORD_LENGTH, admit
from mailrelay.imap.store_api import (
    FlagsChanged,
    KeywordsDefined,
    MessageMeta,
    SelectResult,
    StoreError,
)
from mailrelay.imap.view import SelectedView


def test_admit_keeps_the_mailbox_spelling_and_reports_new_keywords() -> None:
    flags, fresh = admit(["\\Seen", "$label1", "$New", "$new"], ["$Label1"], 10)
    assert flags == ("\\Seen", "$Label1", "$New")
    assert fresh == ["$New"]


def test_admit_refuses_beyond_the_bound_with_limit() -> None:
    known = ["$a", "$b"]
    assert admit(["$A", "$c"], known, 3)[1] == ["$c"]
    with pytest.raises(StoreError) as e:
        admit(["$c", "$d"], known, 3)
    assert e.value.code == "LIMIT" and e.value.status == "NO"
    with pytest.raises(StoreError) as e:
        admit(["$" + "x" * MAX_KEYWORD_LENGTH], [], 3)
    assert e.value.code == "LIMIT"
    # removing flags is never refused
    assert admit(["$" + "x" * MAX_KEYWORD_LENGTH, "$c", "$d"], known, None)[1]


def _lines(out: list) -> list[bytes]:
    return [u.to_bytes() for u in out]


def test_select_names_the_whole_list_and_growth_comes_before_fetch() -> None:
    msgs = [MessageMeta(1, frozenset(), 1), MessageMeta(2, frozenset({"$Seen2"}), 1)]
    v = SelectedView(SelectResult(1, 7, 3, 5, msgs, keywords=("$Old", "$Seen2")))
    assert b"$Old $Seen2" in _lines(v.flag_lines())[0]  # $Old: no message holds it
    # another session (or node) adds $New: the list and the flag change share a MODSEQ
    v.queue([FlagsChanged(1, frozenset({"$New"}), 6), KeywordsDefined(("$Old", "$Seen2", "$New"), 6)])
    out = _lines(v.drain())
    assert out[0].startswith(b"* FLAGS (") and b"$New" in out[0]
    assert b"PERMANENTFLAGS" in out[1] and b"$New" in out[1] and b"\\*)" in out[1]
    assert out[2] == b"* 1 FETCH (FLAGS ($New))\r\n"
    # the list alone (no message holds the keyword any more) is announced too
    v.queue([KeywordsDefined(("$Old", "$Seen2", "$New", "$Gone"), 7)])
    out = _lines(v.drain())
    assert len(out) == 2 and b"$Gone" in out[0]
    # an older list arriving late is ignored
    v.queue([KeywordsDefined(("$Old",), 3)])
    assert v.drain() == []
    assert v.keywords == {"$Old", "$Seen2", "$New", "$Gone"}
