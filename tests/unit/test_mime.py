"""mailrelay.mime: ENVELOPE, BODYSTRUCTURE (checked against Dovecot's output), sections."""

import json

import pytest

from mailrelay.mime import (
    imap_string,
    normalize_crlf,
    parse_message,
    parse_section,
    render_bodystructure,
    render_envelope,
    section_bytes,
)
from mailrelay.mime.decode import decode_words
from mailrelay.mime.structure import MAX_DEPTH

# The message of Dovecot's src/lib-imap/test-imap-bodystructure.c; the expected
# strings below are what Dovecot answers for it (sizes with CRLF line ends).
DOVECOT_MSG = normalize_crlf(
    b"From: user@domain.org\n"
    b"Date: Sat, 24 Mar 2007 23:00:00 +0200\n"
    b"Mime-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="foo\n'
    b' bar"\n'
    b"\n"
    b"Root MIME prologue\n"
    b"\n"
    b"--foo bar\n"
    b'Content-Type: text/x-myown; charset=us-ascii; foo="quoted\\"string"\n'
    b"Content-ID: <foo@example.com>\n"
    b"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n"
    b"Content-Disposition: inline; foo=bar\n"
    b"Content-Description: hellodescription\n"
    b"Content-Language: en, fi, se\n"
    b"Content-Location: http://example.com/test.txt\n"
    b"\n"
    b"hello\n"
    b"\n"
    b"--foo bar\n"
    b"Content-Type: message/rfc822\n"
    b"\n"
    b"From: sub@domain.org\n"
    b"To: sub-to1@domain.org, sub-to2@domain.org\n"
    b"Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
    b"Subject: submsg\n"
    b'Content-Type: multipart/alternative; boundary="sub1"\n'
    b"\n"
    b"Sub MIME prologue\n"
    b"--sub1\n"
    b"Content-Type: text/html\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"\n"
    b"<p>Hello world</p>\n"
    b"\n"
    b"--sub1\n"
    b"Content-Type: text/plain\n"
    b"Content-Transfer-Encoding: ?invalid\n"
    b"\n"
    b"Hello another world\n"
    b"\n"
    b"--sub1--\n"
    b"Sub MIME epilogue\n"
    b"\n"
    b"--foo bar--\n"
    b"Root MIME epilogue\n"
)
_SUB_ENV = (
    b'("Sun, 12 Aug 2012 12:34:56 +0300" "submsg" ((NIL NIL "sub" "domain.org")) '
    b'((NIL NIL "sub" "domain.org")) ((NIL NIL "sub" "domain.org")) '
    b'((NIL NIL "sub-to1" "domain.org")(NIL NIL "sub-to2" "domain.org")) NIL NIL NIL NIL)'
)
DOVECOT_BODYSTRUCTURE = (
    b'(("text" "x-myown" ("charset" "us-ascii" "foo" "quoted\\"string") "<foo@example.com>" '
    b'"hellodescription" "7bit" 7 1 "Q2hlY2sgSW50ZWdyaXR5IQ==" ("inline" ("foo" "bar")) '
    b'("en" "fi" "se") "http://example.com/test.txt")'
    b'("message" "rfc822" NIL NIL NIL "7bit" 412 ' + _SUB_ENV + b" "
    b'(("text" "html" ("charset" "us-ascii") NIL NIL "8bit" 20 1 NIL NIL NIL NIL)'
    b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 21 1 NIL NIL NIL NIL) '
    b'"alternative" ("boundary" "sub1") NIL NIL NIL) 21 NIL NIL NIL NIL) '
    b'"mixed" ("boundary" "foo bar") NIL NIL NIL)'
)
DOVECOT_BODY = (
    b'(("text" "x-myown" ("charset" "us-ascii" "foo" "quoted\\"string") "<foo@example.com>" '
    b'"hellodescription" "7bit" 7 1)'
    b'("message" "rfc822" NIL NIL NIL "7bit" 412 ' + _SUB_ENV + b" "
    b'(("text" "html" ("charset" "us-ascii") NIL NIL "8bit" 20 1)'
    b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 21 1) "alternative") 21) "mixed")'
)


def test_dovecot_bodystructure_vector() -> None:
    s = parse_message(DOVECOT_MSG)
    assert render_bodystructure(s["body"]) == DOVECOT_BODYSTRUCTURE
    assert render_bodystructure(s["body"], extended=False) == DOVECOT_BODY


def test_structure_is_json_round_trippable() -> None:
    s = parse_message(DOVECOT_MSG)
    again = json.loads(json.dumps(s))
    assert render_bodystructure(again["body"]) == DOVECOT_BODYSTRUCTURE


def _sb(raw: bytes, s: dict, sec: str) -> bytes:
    out = section_bytes(raw, s, sec)
    assert out is not None
    return out


def test_dovecot_vector_sections() -> None:
    s = parse_message(DOVECOT_MSG)
    assert section_bytes(DOVECOT_MSG, s, "1") == b"hello\r\n"
    assert _sb(DOVECOT_MSG, s, "1.MIME").startswith(b"Content-Type: text/x-myown")
    assert _sb(DOVECOT_MSG, s, "1.MIME").endswith(b"test.txt\r\n\r\n")
    assert _sb(DOVECOT_MSG, s, "2.HEADER").startswith(b"From: sub@domain.org")
    assert section_bytes(DOVECOT_MSG, s, "2.1") == b"<p>Hello world</p>\r\n"
    assert section_bytes(DOVECOT_MSG, s, "2.2") == b"Hello another world\r\n"
    assert _sb(DOVECOT_MSG, s, "2.2.MIME").startswith(b"Content-Type: text/plain")
    assert _sb(DOVECOT_MSG, s, "2.TEXT").startswith(b"Sub MIME prologue")
    assert len(_sb(DOVECOT_MSG, s, "2")) == 412
    assert section_bytes(DOVECOT_MSG, s, "2.HEADER.FIELDS (SUBJECT)") == b"Subject: submsg\r\n\r\n"
    assert section_bytes(DOVECOT_MSG, s, "3") is None
    assert section_bytes(DOVECOT_MSG, s, "1.HEADER") is None
    assert section_bytes(DOVECOT_MSG, s, "") == DOVECOT_MSG
    assert section_bytes(DOVECOT_MSG, s, "TEXT", partial=(0, 4)) == b"Root"
    assert section_bytes(DOVECOT_MSG, s, "TEXT", partial=(10**6, 4)) == b""


def test_simple_message_defaults() -> None:
    raw = b"Subject: hi\r\nFrom: a@b.c\r\n\r\nline1\r\nline2\r\n"
    s = parse_message(raw)
    assert render_bodystructure(s["body"]) == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 14 2 NIL NIL NIL NIL)'
    )
    env = render_envelope(s["env"])
    assert env == (
        b'(NIL "hi" ((NIL NIL "a" "b.c")) ((NIL NIL "a" "b.c")) ((NIL NIL "a" "b.c")) '
        b"NIL NIL NIL NIL NIL)"
    )
    assert section_bytes(raw, s, "1") == b"line1\r\nline2\r\n"
    assert section_bytes(raw, s, "HEADER") == b"Subject: hi\r\nFrom: a@b.c\r\n\r\n"


def test_multipart_mixed_with_attachment() -> None:
    raw = normalize_crlf(
        b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.de>\n"
        b'To: "Doe, Jane" <jane@example.com>, bob@example.com (Bob Smith)\n'
        b"Cc: Team: x@y.z, w@y.z;\n"
        b"Reply-To: <reply@example.com>\n"
        b"In-Reply-To: <prev@example.com>\n"
        b"Message-ID: <id1@example.com>\n"
        b'Content-Type: multipart/mixed; boundary="=_abc"\n\n'
        b"--=_abc\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n\n"
        + "Grüße\n".encode()
        + b"--=_abc\n"
        b"Content-Type: application/pdf; name*=UTF-8''%E6%96%87.pdf\n"
        b'Content-Disposition: attachment;\n filename*0="long"; filename*1="name.pdf"\n'
        b"Content-Transfer-Encoding: base64\n\nJVBERi0=\n--=_abc--\n"
    )
    s = parse_message(raw)
    env = render_envelope(s["env"])
    assert b'(("=?utf-8?q?J=C3=BCrgen?=" NIL "j" "example.de"))' in env
    assert b'("Doe, Jane" NIL "jane" "example.com")("Bob Smith" NIL "bob" "example.com")' in env
    assert b'((NIL NIL "Team" NIL)(NIL NIL "x" "y.z")(NIL NIL "w" "y.z")(NIL NIL NIL NIL))' in env
    assert b'((NIL NIL "reply" "example.com"))' in env
    assert env.endswith(b'"<prev@example.com>" "<id1@example.com>")')
    bs = render_bodystructure(s["body"])
    # "Grüße" is 7 bytes in UTF-8; the CRLF before the boundary is not part of it
    assert b'("text" "plain" ("charset" "UTF-8") NIL NIL "8bit" 7 0 NIL NIL NIL NIL)' in bs
    assert b'("name" "UTF-8\'\'%E6%96%87.pdf")' in bs
    assert b'("attachment" ("filename" "longname.pdf"))' in bs
    assert bs.endswith(b'"mixed" ("boundary" "=_abc") NIL NIL NIL)')
    assert section_bytes(raw, s, "2") == b"JVBERi0="


def test_chinese_rfc2047_subject_left_encoded() -> None:
    subj = b"=?UTF-8?B?5Lit5paH5rWL6K+V?= =?GB2312?B?1tDOxA==?="
    raw = b"Subject: " + subj + b"\r\nFrom: =?UTF-8?B?5byg5LiJ?= <zhang@example.cn>\r\n\r\nx"
    s = parse_message(raw)
    env = render_envelope(s["env"])
    assert b'"' + subj + b'"' in env
    assert b'(("=?UTF-8?B?5byg5LiJ?=" NIL "zhang" "example.cn"))' in env
    assert decode_words(s["env"][1]) == "中文测试中文"


def test_raw_utf8_header_becomes_literal() -> None:
    raw = "Subject: 你好\r\n\r\nx".encode()
    env = render_envelope(parse_message(raw)["env"])
    assert b"{6}\r\n\xe4\xbd\xa0\xe5\xa5\xbd" in env


def test_nested_message_rfc822_in_multipart() -> None:
    inner = b"From: in@x.y\r\nSubject: inner\r\n\r\ninner body\r\n"
    raw = (
        b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
        b"Content-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--B--\r\n"
    )
    s = parse_message(raw)
    part = s["body"]["parts"][0]
    assert part["env"][1] == "inner"
    assert section_bytes(raw, s, "1") == inner
    assert section_bytes(raw, s, "1.1") == b"inner body\r\n"
    assert section_bytes(raw, s, "1.HEADER") == b"From: in@x.y\r\nSubject: inner\r\n\r\n"


def test_digest_defaults_to_message_rfc822() -> None:
    raw = (
        b"Content-Type: multipart/digest; boundary=D\r\n\r\n--D\r\n\r\n"
        b"Subject: a\r\n\r\nA\r\n--D--\r\n"
    )
    part = parse_message(raw)["body"]["parts"][0]
    assert (part["type"], part["subtype"]) == ("message", "rfc822")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n",
        b"no header at all",
        b"Content-Type: multipart/mixed\r\n\r\nno boundary param",
        b"Content-Type: multipart/mixed; boundary=X\r\n\r\nboundary never appears",
        b"Content-Type: multipart/mixed; boundary=X\r\n\r\n--X\r\nContent-Type: text/plain\r\n\r\nunclosed",
        b'Content-Type: text/plain; charset="no-such-charset\r\n\r\nx',
        b"Content-Type: /\r\nContent-Transfer-Encoding:\r\nContent-Disposition: ;;\r\n\r\n",
        b"Subject: " + b"x" * 200000 + b"\r\n\r\nbody",
        b'From: <<<@@@>>>, "unterminated\r\nTo: ;;;,,,:::\r\n\r\n',
        b"Content-Type: message/rfc822\r\n\r\n",
        b"\xff\xfe\x00\x01: \x80\x81\r\n\r\n\x00",
    ],
)
def test_malformed_never_raises(raw: bytes) -> None:
    s = parse_message(raw)
    render_envelope(s["env"])
    bs = render_bodystructure(s["body"])
    assert bs.startswith(b"(") and bs.endswith(b")")
    json.dumps(s)
    section_bytes(raw, s, "1.2.3.MIME")


def test_multipart_without_parts_renders_empty_text_child() -> None:
    s = parse_message(b"Content-Type: multipart/mixed; boundary=X\r\n\r\nnothing\r\n")
    assert render_bodystructure(s["body"], False) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "mixed")'
    )


def test_unclosed_last_part_runs_to_end() -> None:
    raw = b"Content-Type: multipart/mixed; boundary=X\r\n\r\n--X\r\n\r\nabc\r\n"
    s = parse_message(raw)
    assert section_bytes(raw, s, "1") == b"abc\r\n"


def test_deep_nesting_is_bounded() -> None:
    raw = b""
    for i in range(200):
        raw += b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
    s = parse_message(raw + b"\r\nleaf")
    depth, part = 0, s["body"]
    while "parts" in part:
        depth, part = depth + 1, part["parts"][0]
    # Nesting past MAX_DEPTH becomes an opaque leaf: 200 levels stop at the bound.
    assert depth == MAX_DEPTH, depth
    rendered = render_bodystructure(s["body"])
    assert rendered.count(b"(") <= 4 * (MAX_DEPTH + 1)


def test_imap_string_quoting() -> None:
    assert imap_string("plain") == b'"plain"'
    assert imap_string('a"b\\c') == b'"a\\"b\\\\c"'
    assert imap_string("a\r\nb") == b"{4}\r\na\r\nb"
    assert imap_string("\xe9") == b"{1}\r\n\xe9"


def test_parse_section() -> None:
    assert str(parse_section("1.2.HEADER.FIELDS (From To)")) == "1.2.HEADER.FIELDS (FROM TO)"
    assert parse_section("MIME") is None
    assert parse_section("HEADER.FIELDS") is None
    assert parse_section("1.BOGUS") is None
