"""Issue 18 item 3, content side: BINARY (RFC 3516), quoted-printable (RFC 2045 §6.7),
address comments in ENVELOPE and SEARCH FROM/TO (RFC 5322 §3.2.2)."""

from __future__ import annotations

import base64

from mailrelay.imap.fetch import fetch_response
from mailrelay.imap.proto import FetchAttr, SearchKey
from mailrelay.imap.search import search
from mailrelay.mime import Section
from mailrelay.mime.decode import decode_qp, decode_transfer
from mailrelay.mime.headers import parse_addresses

from .conftest import make_row
from .fakestore import FakeStore
from .test_session import Client

SINGLE = (
    b"From: a@example.org\r\nSubject: b64\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"AAECAw==\r\n"
)


def test_binary_whole_message_includes_the_header() -> None:
    row = make_row(SINGLE)
    header = SINGLE[: SINGLE.index(b"\r\n\r\n") + 4]
    out = fetch_response(1, row, (FetchAttr("BINARY", Section()),
                                  FetchAttr("BINARY.SIZE", Section())))
    whole = header + b"\x00\x01\x02\x03"
    # RFC 3516 §4.2: header plus the decoded body; NUL inside, so literal8 (§4.3)
    assert b"BINARY[] ~{%d}\r\n" % len(whole) + whole in out
    assert b"BINARY.SIZE[] %d" % len(whole) in out
    out = fetch_response(1, row, (FetchAttr("BINARY", Section((1,))),))
    assert out.endswith(b"BINARY[1] ~{4}\r\n\x00\x01\x02\x03)")


def test_body_with_nul_goes_as_literal8() -> None:
    raw = b"Subject: nul\r\nContent-Transfer-Encoding: binary\r\n\r\na\x00b\r\n"
    out = fetch_response(1, make_row(raw), (FetchAttr("BODY", Section()),))
    assert b"BODY[] ~{%d}\r\n" % len(raw) in out


def test_quoted_printable_per_rfc2045() -> None:
    # trailing white space is transport padding; "= " is kept; soft breaks join lines
    assert decode_qp(b"abc   \r\ndef=\r\nghi\r\n") == b"abc\r\ndefghi\r\n"
    assert decode_qp(b"a= b =3D c=\t \r\nd") == b"a= b = cd"
    assert decode_qp(b"caf=C3=A9=\nx") == b"caf\xc3\xa9x"
    assert decode_qp(b"=4") == b"=4"
    assert decode_transfer(b"x=20y  \r\n", "Quoted-Printable") == b"x y\r\n"


def test_address_comments_are_not_part_of_the_address() -> None:
    assert parse_addresses("John Doe <john(boss)@(here)example.org>") == [
        ["John Doe", None, "john", "example.org"]
    ]
    assert parse_addresses("john(nested (c))@example.org (John)") == [
        ["John", None, "john", "example.org"]
    ]
    assert parse_addresses('"a(b)" <x@y.org>') == [["a(b)", None, "x", "y.org"]]


def test_envelope_and_search_from_strip_comments() -> None:
    raw = b"From: Li <li(office)@cx.example>\r\nTo: wang@(x)cx.example\r\nSubject: s\r\n\r\nb\r\n"
    row = make_row(raw)
    env = fetch_response(1, row, (FetchAttr("ENVELOPE"),))
    assert b'(("Li" NIL "li" "cx.example"))' in env and b"office" not in env
    hits = search(SearchKey("HEADER", ("FROM", b"li@cx.example")), [row], [1], 1, 1, [])
    assert hits == [row]
    assert search(SearchKey("HEADER", ("FROM", b"office")), [row], [1], 1, 1, []) == []
    assert search(SearchKey("HEADER", ("TO", b"wang@cx.example")), [row], [1], 1, 1, []) == [row]


async def test_append_literal8_keeps_binary_bytes() -> None:
    store = FakeStore()
    c = Client(store)
    await c.cmd("a LOGIN alice secret")
    msg = (b"Subject: bin\r\nContent-Type: application/octet-stream\r\n"
           b"Content-Transfer-Encoding: binary\r\n\r\n\x00\n\x01\r\x02\n")
    out = await c.send(b"b APPEND INBOX ~{%d+}\r\n" % len(msg) + msg + b"\r\n")
    assert b"b OK" in out
    row = next(iter(store.boxes["INBOX"].rows.values()))
    # RFC 3516 §4.2: BODY[] may not carry NUL, so the part is stored base64 (as Dovecot
    # does); its bytes are kept exactly (no line-ending rewrite, RFC 3516 §4.4)
    head, _, body = row.raw.partition(b"\r\n\r\n")
    assert b"Content-Transfer-Encoding: base64" in head and b"binary" not in head
    assert base64.b64decode(body) == b"\x00\n\x01\r\x02\n"
    await c.cmd("s SELECT INBOX")
    out = await c.send(b"f FETCH 1 (BODY.PEEK[1] BINARY.PEEK[1])\r\n")
    assert b"BINARY[1] ~{6}\r\n\x00\n\x01\r\x02\n" in out  # the bytes sent
    assert b"BODY[1] {" in out and out.count(b"\x00") == 1  # NUL only in BINARY[]
