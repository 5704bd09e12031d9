"""SEARCH: key parsing (RFC 3501 §6.4.4), ESEARCH (RFC 4731), evaluation over rows."""

from datetime import UTC, date, datetime
from typing import Any

import pytest

from mailrelay.imap.proto import Search, SearchKey, SequenceSet
from mailrelay.imap.search import needs_content, search, search_response, uses_modseq

from .conftest import Link, make_row


def selected() -> Link:
    link = Link()
    link.select()
    return link


def parse(line: bytes) -> Search:
    cmd = selected().command(line)
    assert isinstance(cmd, Search)
    return cmd


def test_simple_keys_are_normalised() -> None:
    assert parse(b"a SEARCH SEEN").key == SearchKey("FLAG", ("\\Seen",))
    assert parse(b"a SEARCH unseen").key == SearchKey("NOT", (SearchKey("FLAG", ("\\Seen",)),))
    assert parse(b"a SEARCH ALL").key == SearchKey("ALL")
    assert parse(b"a SEARCH KEYWORD $Junk").key == SearchKey("FLAG", ("$Junk",))


def test_compound_program() -> None:
    cmd = parse(b'a UID SEARCH CHARSET UTF-8 OR FROM "bob" (SUBJECT hi LARGER 10) NOT DELETED 1:5')
    assert cmd.uid and cmd.charset == "UTF-8"
    k: Any = cmd.key
    assert k.op == "AND" and len(k.args) == 3
    assert k.args[0].op == "OR"
    assert k.args[0].args[0] == SearchKey("HEADER", ("FROM", b"bob"))
    assert k.args[0].args[1].op == "AND"
    assert k.args[2] == SearchKey("SEQ", (SequenceSet(((1, 5),)),))


def test_dates_literals_and_modseq() -> None:
    link = selected()
    link.send(b"a SEARCH SINCE 1-Feb-2024 BODY {5}\r\n")
    assert link.out().startswith(b"+ ")
    cmd = link.send(b"hello\r\n")[0].command
    assert cmd.key.args[0] == SearchKey("SINCE", (date(2024, 2, 1),))
    assert cmd.key.args[1] == SearchKey("BODY", (b"hello",))
    cmd = parse(b'a SEARCH MODSEQ "/flags/\\\\draft" all 620162338')
    assert cmd.key == SearchKey("MODSEQ", (620162338,))
    assert uses_modseq(cmd.key)


def test_esearch_return_options() -> None:
    cmd = parse(b"a SEARCH RETURN (MIN MAX COUNT) UNSEEN")
    assert cmd.returns == ("MIN", "MAX", "COUNT")
    assert parse(b"a SEARCH RETURN () ALL").returns == ()
    assert parse(b"a SEARCH ALL").returns is None


@pytest.mark.parametrize(
    "line",
    [
        b"a SEARCH",
        b"a SEARCH FOO",
        b"a SEARCH SINCE 31-Foo-2024",
        b"a SEARCH (SEEN",
        b"a SEARCH OR SEEN",
    ],
)
def test_search_syntax_errors(line: bytes) -> None:
    link = selected()
    link.send(line + b"\r\n")
    assert link.out().startswith(b"a BAD")


def _rows():
    r1 = make_row(
        b"From: Bob <bob@example.com>\r\nSubject: =?UTF-8?B?5Lit5paH?= report\r\n"
        b"Date: Tue, 2 Jan 2024 10:00:00 +0000\r\n\r\nHello world\r\n",
        uid=10,
        flags={"\\Seen"},
        date=datetime(2024, 1, 2, tzinfo=UTC),
        modseq=5,
    )
    r2 = make_row(
        b"From: alice@example.org\r\nSubject: other\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b"R3LDvMOfZQ==\r\n",
        uid=20,
        flags={"\\Flagged"},
        date=datetime(2024, 3, 1, tzinfo=UTC),
        modseq=9,
    )
    r3 = make_row(b"Subject: x\r\n\r\n" + b"y" * 5000, uid=30, modseq=2)
    return [r1, r2, r3]


def run(line: bytes) -> list[int]:
    cmd = parse(line)
    rows = _rows()
    hits = search(cmd.key, rows, [1, 2, 3], max_seq=3, max_uid=30)
    return [r.uid for r in hits]


def test_evaluate_flags_seq_uid() -> None:
    assert run(b"a SEARCH SEEN") == [10]
    assert run(b"a SEARCH UNSEEN") == [20, 30]
    assert run(b"a SEARCH FLAGGED") == [20]
    assert run(b"a SEARCH 2:*") == [20, 30]
    assert run(b"a SEARCH UID 15:*") == [20, 30]
    assert run(b"a SEARCH NOT 1") == [20, 30]
    assert run(b"a SEARCH OR SEEN FLAGGED") == [10, 20]


def test_evaluate_headers_body_text() -> None:
    assert run(b"a SEARCH FROM bob") == [10]
    assert run(b'a SEARCH SUBJECT "\xe4\xb8\xad\xe6\x96\x87"') == [10]  # decoded RFC 2047
    assert run(b"a SEARCH BODY HELLO") == [10]
    assert run(b'a SEARCH BODY "gr\xc3\xbc\xc3\x9fe"') == [20]  # base64 + UTF-8 decoded
    assert run(b"a SEARCH TEXT alice") == [20]
    assert run(b'a SEARCH HEADER Content-Type ""') == [20]


def test_evaluate_dates_sizes_modseq() -> None:
    assert run(b"a SEARCH SINCE 1-Feb-2024") == [20]
    assert run(b"a SEARCH BEFORE 1-Feb-2024 NOT UID 30") == [10]
    assert run(b"a SEARCH ON 2-Jan-2024") == [10]
    assert run(b"a SEARCH SENTON 2-Jan-2024") == [10]
    assert run(b"a SEARCH LARGER 1000") == [30]
    assert run(b"a SEARCH SMALLER 1000") == [10, 20]
    assert run(b"a SEARCH MODSEQ 5") == [10, 20]


def test_needs_content() -> None:
    assert not needs_content(parse(b"a SEARCH SEEN 1:3").key)
    assert needs_content(parse(b"a SEARCH NOT BODY x").key)


def test_search_responses() -> None:
    assert search_response("a", [1, 2, 3], uid=False, returns=None) == b"SEARCH 1 2 3"
    assert search_response("a", [], uid=False, returns=None) == b"SEARCH"
    assert search_response("a", [2, 5], uid=False, returns=None, highest_modseq=9) == (
        b"SEARCH 2 5 (MODSEQ 9)"
    )
    assert search_response(
        "t1", [1, 2, 3, 7], uid=True, returns=("MIN", "MAX", "COUNT", "ALL")
    ) == (b'ESEARCH (TAG "t1") UID MIN 1 MAX 7 ALL 1:3,7 COUNT 4')
    assert search_response("t", [4], uid=False, returns=()) == b'ESEARCH (TAG "t") ALL 4'
    assert search_response("t", [], uid=False, returns=("MIN", "COUNT")) == (
        b'ESEARCH (TAG "t") COUNT 0'
    )


def test_esearch_min_max_modseq_is_that_of_the_returned_message() -> None:
    # RFC 4731 §3.2 / RFC 7162 §3.1.5: hits 2 (modseq 40), 5 (modseq 7), 9 (modseq 12)
    nums, mods = [2, 5, 9], [40, 7, 12]
    r = search_response("t", nums, uid=False, returns=("MIN",), modseqs=mods)
    assert r == b'ESEARCH (TAG "t") MIN 2 MODSEQ 40'
    r = search_response("t", nums, uid=False, returns=("MAX",), modseqs=mods)
    assert r == b'ESEARCH (TAG "t") MAX 9 MODSEQ 12'
    r = search_response("t", [5, 9], uid=False, returns=("MIN", "MAX"), modseqs=[7, 12])
    assert r == b'ESEARCH (TAG "t") MIN 5 MAX 9 MODSEQ 12'
    r = search_response("t", nums, uid=True, returns=("MAX", "COUNT"), modseqs=mods)
    assert r == b'ESEARCH (TAG "t") UID MAX 9 COUNT 3 MODSEQ 40'
    assert search_response("t", nums, uid=False, returns=None, modseqs=mods) == (
        b"SEARCH 2 5 9 (MODSEQ 40)"
    )
