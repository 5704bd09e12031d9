"""SORT and THREAD (RFC 5256): base subject, sort order, both threading algorithms,
parsing, and the session over the fake store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailrelay.imap.proto import Sort, Thread
from mailrelay.imap.sort import (
    SortInfo,
    base_subject,
    format_threads,
    sort_info,
    sort_messages,
    thread_orderedsubject,
    thread_references,
)

from .conftest import Link

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("subject", "base"),
    [
        ("Re: hello", "hello"),
        ("RE: Re:  re: Hello   World", "hello world"),
        ("Fwd: [list] Re: topic (fwd)", "topic"),
        ("[fwd: Re: budget]", "budget"),
        ("Re[2]: report", "report"),
        ("[PATCH] fix it", "fix it"),
        ("[only a blob]", "[only a blob]"),
        ("=?utf-8?q?Re=3A_Gr=C3=BC=C3=9Fe?=", "grüsse"),
        ("", ""),
    ],
)
def test_base_subject(subject: str, base: str) -> None:
    assert base_subject(subject) == base


def info(uid: int, subject: str = "s", days: int = 0, extra: str = "", size: int = 10):
    date = (T0 + timedelta(days=days)).strftime("%a, %d %b %Y %H:%M:%S +0000")
    header = (
        f"Subject: {subject}\r\nDate: {date}\r\nMessage-ID: <{uid}@x>\r\n{extra}\r\n"
    ).encode()
    return sort_info(uid, uid, T0 - timedelta(days=uid), size, header)


def test_sort_keys_reverse_and_ties() -> None:
    a = info(1, "b", 2, "From: Zed <z@x>\r\nCc: m@x\r\n", size=30)
    b = info(2, "Re: a", 1, "From: Amy <amy@x>\r\n", size=20)
    c = info(3, "a", 3, "From: AMY <amy@y>\r\n", size=20)
    assert [i.uid for i in sort_messages([a, b, c], [("SUBJECT", False)])] == [2, 3, 1]
    assert [i.uid for i in sort_messages([a, b, c], [("DATE", False)])] == [2, 1, 3]
    assert [i.uid for i in sort_messages([a, b, c], [("ARRIVAL", False)])] == [3, 2, 1]
    # equal sizes keep mailbox order; REVERSE applies to its own key only
    assert [i.uid for i in sort_messages([a, b, c], [("SIZE", False)])] == [2, 3, 1]
    assert [i.uid for i in sort_messages([a, b, c], [("SIZE", True), ("DATE", True)])] == [
        1,
        3,
        2,
    ]
    assert [i.uid for i in sort_messages([a, b, c], [("FROM", False)])] == [2, 3, 1]
    # no Cc sorts as the empty string, before "m"
    assert [i.uid for i in sort_messages([a, b, c], [("CC", False)])] == [2, 3, 1]


def test_date_falls_back_to_arrival() -> None:
    i = sort_info(7, 7, T0, 1, b"Subject: x\r\nDate: garbage\r\n\r\n")
    assert i.sent == T0


def test_orderedsubject() -> None:
    msgs = [
        info(1, "hello", 0),
        info(2, "other", 1),
        info(3, "Re: hello", 2),
        info(4, "Re: hello", 3),
        info(5, "Re: other", 4),
    ]
    roots = thread_orderedsubject(msgs)
    assert format_threads(roots, lambda i: i.seq) == "(1 (3)(4))(2 5)"


def test_references_tree_dummies_and_subject_merge() -> None:
    msgs = [
        info(1, "root", 0),
        info(2, "Re: root", 1, "In-Reply-To: <1@x>\r\n"),
        info(3, "Re: root", 2, "References: <1@x> <2@x>\r\n"),
        info(4, "Re: root", 3, "References: <1@x>\r\n"),
        # parent never arrived: a dummy with two children stays (at the root)
        info(5, "lost", 4, "References: <missing@x>\r\n"),
        info(6, "lost too", 5, "References: <missing@x>\r\n"),
        # no references, but the same base subject as the thread of 1: merged
        info(7, "Re: root", 6),
        # a reference loop must not hang or lose messages
        info(8, "loop", 7, "References: <9@x>\r\n"),
        info(9, "loop", 8, "References: <8@x>\r\n"),
    ]
    text = format_threads(thread_references(msgs), lambda i: i.seq)
    assert text.startswith("(1 (2 3)(4)(7))"), text
    assert "((5)(6))" in text
    nums = sorted(int(x) for x in text.replace("(", " ").replace(")", " ").split())
    assert nums == list(range(1, 10))  # every message exactly once


def test_references_single_child_dummy_promoted() -> None:
    msgs = [info(1, "a", 0, "References: <gone@x>\r\n"), info(2, "b", 1)]
    assert format_threads(thread_references(msgs), lambda i: i.uid) == "(1)(2)"


def selected() -> Link:
    link = Link()
    link.select()
    return link


def test_parse_sort_and_thread() -> None:
    cmd = selected().command(b"a UID SORT (REVERSE DATE SUBJECT) UTF-8 UNSEEN")
    assert isinstance(cmd, Sort) and cmd.uid
    assert cmd.criteria == (("DATE", True), ("SUBJECT", False))
    cmd = selected().command(b"a THREAD REFERENCES us-ascii ALL")
    assert isinstance(cmd, Thread) and cmd.algorithm == "REFERENCES" and cmd.charset == "US-ASCII"
    for bad in (
        b"a SORT (REVERSE) UTF-8 ALL",
        b"a SORT (NAME) UTF-8 ALL",
        b"a SORT (DATE) ALL",
        b"a THREAD NOTHREAD UTF-8 ALL",
    ):
        link = selected()
        link.send(bad + b"\r\n")
        assert link.out().startswith(b"a BAD"), bad


def test_esort_parse_and_reply() -> None:
    from mailrelay.imap.sort import esort_response

    cmd = selected().command(b"a UID SORT RETURN (MIN COUNT ALL) (DATE) UTF-8 ALL")
    assert isinstance(cmd, Sort) and cmd.returns == ("MIN", "COUNT", "ALL")
    link = selected()
    link.send(b"a SORT RETURN (PARTIAL) (DATE) UTF-8 ALL\r\n")
    assert link.out().startswith(b"a BAD")
    assert (
        esort_response("t", [5, 3, 4, 9, 10, 11, 1], uid=True, returns=("MIN", "MAX", "ALL"))
        == 'ESEARCH (TAG "t") UID MIN 5 MAX 1 ALL 5,3:4,9:11,1'
    )
    assert esort_response("t", [], uid=False, returns=("MIN", "COUNT")) == (
        'ESEARCH (TAG "t") COUNT 0'
    )
    assert esort_response("t", [2, 1], uid=False, returns=()) == 'ESEARCH (TAG "t") ALL 2,1'


def test_sort_uses_ascii_casemap_upper_case() -> None:
    """imaptest sort-subject: i;ascii-casemap (RFC 4790 §9.2) compares letters as upper
    case, so "_" and "[xyz]" sort after "b" and "C", as Dovecot orders them."""
    infos = [info(1, "_"), info(2, "b"), info(3, "[xyz]"), info(4, "C")]
    assert [i.uid for i in sort_messages(infos, [("SUBJECT", False)])] == [2, 4, 3, 1]
    cc = [info(5, extra="Cc: x_y@example.org\r\n"), info(6, extra="Cc: xz@example.org\r\n")]
    assert [i.uid for i in sort_messages(cc, [("CC", False)])] == [6, 5]


def test_sort_cc_group_sorts_by_group_name() -> None:
    """imaptest sort-addresses: a CC that starts with a group sorts by the group name
    (the addr-mailbox of the group start in ENVELOPE), not by its first member."""
    infos = [
        info(1, extra="Cc: user2@domain2.org (foo bar)\r\n"),
        info(2, extra="Cc: user2: blah@domain1.org;\r\n"),
        info(3, extra="Cc: user1@domain1.org\r\n"),
    ]
    assert [i.uid for i in sort_messages(infos, [("CC", False)])] == [3, 1, 2]


def test_references_loop_breaks_the_earlier_parent_rfc5256() -> None:
    """imaptest `thread`: 2 references 1 then 3, 3 references 2. RFC 5256 §4 step 1.B for
    message 3: its parent from message 2's references (1) is broken before the new link
    is made, and the new link (2 as parent of 3) is not made, since 2 descends from 3:
    3 ends at the root with 2 under it. No Date: headers, so the internal dates (17:06,
    15:06, 16:06 as imaptest appends them) order the threads: Dovecot's answer."""

    def msg(n: int, refs: str) -> SortInfo:
        header = f"Message-ID: <{'abc'[n - 1]}@b>\r\n{refs}\r\n".encode()
        return sort_info(n, n, T0 + timedelta(hours=(17, 15, 16)[n - 1]), 10, header)

    msgs = [msg(1, ""), msg(2, "References: <a@b> <c@b>\r\n"), msg(3, "References: <b@b>\r\n")]
    assert format_threads(thread_references(msgs), lambda i: i.seq) == "(3 2)(1)"
    # imaptest then expunges 1: 2 and 3 become 1 and 2, the dummy <a@b> goes
    rest = [msg(2, "References: <a@b> <c@b>\r\n"), msg(3, "References: <b@b>\r\n")]
    assert format_threads(thread_references(rest), lambda i: i.seq - 1) == "(2 1)"
