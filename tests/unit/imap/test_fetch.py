"""FETCH: attribute parsing (RFC 3501 §6.4.5, RFC 3516, RFC 7162) and response building."""

from datetime import datetime, timedelta, timezone

import pytest

from mailrelay.imap.fetch import (
    BinaryUnknownEncoding,
    fetch_response,
    format_internaldate,
    needs_raw,
    needs_structure,
    sets_seen,
)
from mailrelay.imap.proto import Fetch, FetchAttr, SequenceSet
from mailrelay.mime import Section

from .conftest import Link, make_row

MSG = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: test\r\n"
    b"Content-Type: multipart/mixed; boundary=b1\r\n"
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"hello\r\n"
    b"--b1\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAEC\r\n"
    b"--b1--\r\n"
)


def selected() -> Link:
    link = Link()
    link.select()
    return link


def test_fetch_macros() -> None:
    link = selected()
    cmd = link.command(b"a FETCH 1:* ALL")
    assert [a.name for a in cmd.attrs] == ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"]
    assert [a.name for a in link.command(b"a FETCH 1 FAST").attrs][-1] == "RFC822.SIZE"
    assert [a.name for a in link.command(b"a FETCH 1 FULL").attrs][-1] == "BODY"


def test_fetch_sections_and_partials() -> None:
    link = selected()
    cmd = link.command(
        b'a FETCH 1,3:5 (UID BODY.PEEK[HEADER.FIELDS (From "To")] BODY[1.2.MIME]<10.20> '
        b"BODY[] BINARY.PEEK[2] BINARY.SIZE[2] RFC822.SIZE BODYSTRUCTURE)"
    )
    assert cmd.seqset == SequenceSet(((1, 1), (3, 5)))
    a = cmd.attrs
    assert a[1] == FetchAttr("BODY", Section((), "HEADER.FIELDS", ("FROM", "TO")), None, True)
    assert a[2] == FetchAttr("BODY", Section((1, 2), "MIME"), (10, 20))
    assert a[3] == FetchAttr("BODY", Section())
    assert a[4] == FetchAttr("BINARY", Section((2,)), None, True)
    assert a[5].name == "BINARY.SIZE"
    assert a[2].response_name() == "BODY[1.2.MIME]<10>"


def test_uid_fetch_adds_uid_and_changedsince_adds_modseq() -> None:
    link = selected()
    cmd = link.command(b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)")
    assert isinstance(cmd, Fetch) and cmd.uid and cmd.vanished
    assert cmd.changedsince == 12345
    assert {a.name for a in cmd.attrs} == {"FLAGS", "UID", "MODSEQ"}


@pytest.mark.parametrize(
    "line",
    [
        b"a FETCH 1 (BODY[HEADER.FIELDS])",
        b"a FETCH 1 BODY[MIME]",
        b"a FETCH 1 BINARY[HEADER]",
        b"a FETCH 1 (FLAGS",
        b"a FETCH 0 FLAGS",
        b"a FETCH 1 NOTANITEM",
        b"a FETCH 1 BODY[1]<5>",
        b"a FETCH 1 (FLAGS) (VANISHED)",
        b"a FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)",
    ],
)
def test_fetch_syntax_errors(line: bytes) -> None:
    link = selected()
    link.send(line + b"\r\n")
    assert link.out().startswith(b"a BAD")


def test_needs_and_seen_helpers() -> None:
    flags = [FetchAttr("FLAGS")]
    body = [FetchAttr("BODY", Section())]
    peek = [FetchAttr("BODY", Section(), peek=True)]
    assert not needs_raw(flags) and needs_raw(body)
    assert needs_structure([FetchAttr("ENVELOPE")])
    assert sets_seen(body) and not sets_seen(peek) and sets_seen([FetchAttr("RFC822")])


def test_internaldate_format() -> None:
    d = datetime(1996, 7, 7, 2, 44, 25, tzinfo=timezone(-timedelta(hours=7)))
    assert format_internaldate(d) == '" 7-Jul-1996 02:44:25 -0700"'


def test_build_fetch_response() -> None:
    row = make_row(MSG, uid=9, flags={"\\Seen"}, modseq=4)
    attrs = (
        FetchAttr("UID"),
        FetchAttr("FLAGS"),
        FetchAttr("RFC822.SIZE"),
        FetchAttr("MODSEQ"),
        FetchAttr("BODY", Section((1,))),
        FetchAttr("BODY", Section((), "HEADER.FIELDS", ("SUBJECT",))),
        FetchAttr("BODY", Section(), (0, 4)),
        FetchAttr("BINARY", Section((2,))),
        FetchAttr("BINARY.SIZE", Section((2,))),
        FetchAttr("BODY", Section((7,))),
    )
    out = fetch_response(3, row, attrs)
    assert out.startswith(b"3 FETCH (UID 9 FLAGS (\\Seen) RFC822.SIZE %d MODSEQ (4) " % len(MSG))
    assert b"BODY[1] {5}\r\nhello" in out
    assert b"BODY[HEADER.FIELDS (SUBJECT)] {17}\r\nSubject: test\r\n\r\n" in out
    assert b"BODY[]<0> {4}\r\nFrom" in out
    assert b"BINARY[2] ~{3}\r\n\x00\x01\x02" in out
    assert b"BINARY.SIZE[2] 3" in out
    assert b"BODY[7] NIL" in out
    assert out.endswith(b")")


def test_build_envelope_bodystructure_rfc822() -> None:
    row = make_row(MSG)
    out = fetch_response(
        1,
        row,
        (
            FetchAttr("ENVELOPE"),
            FetchAttr("BODY"),
            FetchAttr("RFC822.HEADER"),
            FetchAttr("RFC822.TEXT"),
        ),
    )
    assert b'ENVELOPE (NIL "test" (("Alice" NIL "alice" "example.org"))' in out
    assert b'BODY (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0)' in out
    assert b'"mixed")' in out
    assert b"RFC822.HEADER {" in out and b"RFC822.TEXT {" in out


def test_binary_unknown_encoding() -> None:
    raw = b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n"
    with pytest.raises(BinaryUnknownEncoding):
        fetch_response(1, make_row(raw), (FetchAttr("BINARY", Section((1,))),))
