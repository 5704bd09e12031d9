"""mimeparts.fields reads a header block exactly as the ``email`` package does (compat32),
or hands it to the ``email`` package: the verifier's answers never depend on which."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailrelay.documents.mimeparts import HeaderFields, _parse_header_block, fields

NAMES = ["Content-Type", "content-type", "From", "Subject", "Content-Disposition",
         "X-CX-Doc-Id", "From ", "Content-Type ", " Content-Type", "To", "Bad Name"]
VALUES = ['multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256;'
          ' boundary="=_cx_1"', "multipart/mixed; boundary=plain", 'text/plain; charset="a;b"',
          'application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"',
          "multipart/signed; boundary=\"a\\\"b\"; boundary=second", "text", "a/b/c",
          'attachment; filename="cx-document.json"', "attachment; filename*=utf-8''%E6.pdf",
          "x; name*0=a; name*1=b", "finance.docs@cx.example", '"A <b@c>" <d@e>', "",
          " spaced ", "=?utf-8?b?5Z+6?=", "a;;b=;=c; d", 'q="unterminated; boundary=x',
          "MULTIPART/SIGNED; BOUNDARY=UP", "<angle>", "t/s; boundary=\"<x>\""]
PIECES = st.one_of(
    st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)).map(
        lambda nv: f"{nv[0]}: {nv[1]}\r\n"),
    st.sampled_from([" folded; boundary=late\r\n", "\tmore\r\n", "junk line\r\n",
                     "From someone\r\n", "X:\r\n", ":empty\r\n", "Bare\nLF: x\r\n",
                     "Non-ASCII: \u00e9\r\n", "Name:value\r\n"]))


def _same(block: bytes) -> None:
    ours = fields(block)
    theirs = _parse_header_block(block)
    for name in ("content-type", "From", "subject", "x-cx-doc-id", "content-disposition"):
        assert ours.get(name) == theirs.get(name), name
        assert ours.get_all(name) == theirs.get_all(name), name
    assert ours.get_content_type() == theirs.get_content_type()
    for param in ("boundary", "smime-type", "charset", "name", "protocol"):
        assert ours.get_param(param) == theirs.get_param(param), param
    assert ours.get_param("filename", header="content-disposition") == \
        theirs.get_param("filename", header="content-disposition")


@settings(max_examples=500, deadline=None)
@given(st.lists(PIECES, max_size=6))
def test_fields_read_like_the_email_package(pieces: list[str]) -> None:
    _same("".join(pieces).encode("utf-8"))


def test_plain_blocks_take_the_fast_reader() -> None:
    block = (b"From: finance.docs@cx.example\r\nMIME-Version: 1.0\r\n"
             b'Content-Type: multipart/signed; protocol="application/pkcs7-signature";\r\n'
             b' micalg=sha-256; boundary="=_cx_5fe8"\r\n')
    got = fields(block)
    assert isinstance(got, HeaderFields)
    assert got.get_param("boundary") == "=_cx_5fe8"
    _same(block)


def test_irregular_blocks_go_to_the_email_package() -> None:
    for block in (b"From: a\r\njunk line\r\nContent-Type: multipart/signed; boundary=x\r\n",
                  b" continued\r\nFrom: a\r\n", b"From: a\nTo: b\r\n",
                  b"Content-Type: t/s; name*=utf-8''%E6\r\n", "To: \u00e9\r\n".encode()):
        assert not isinstance(fields(block), HeaderFields), block
        _same(block)


def _email_decoded(value: str) -> str:
    import email.header
    try:
        text = str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        text = value
    return " ".join(text.split())


WORDS = st.one_of(
    st.text(max_size=6).map(lambda t: "=?utf-8?b?"
                            + __import__("base64").b64encode(t.encode()).decode() + "?="),
    st.binary(max_size=6).map(lambda b: "=?UTF-8?B?"
                              + __import__("base64").b64encode(b).decode() + "?="),
    st.sampled_from(["=?utf-8?b?5Z+6?=", "=?utf-8?b?5Z?=", "=?utf-8?b?5Z+65Y?=",
                     "=?utf-8?q?a_b?=", "plain", "=?gbk?b?u/k=?=", "=?utf-8?b??=",
                     "=?utf-8?b?5Z+6=?="]))


@settings(max_examples=400, deadline=None)
@given(st.lists(WORDS, min_size=1, max_size=4),
       st.lists(st.sampled_from([" ", "", "\r\n ", "\t"]), min_size=4, max_size=4))
def test_decoded_reads_encoded_words_like_the_email_package(words: list[str],
                                                            gaps: list[str]) -> None:
    from mailrelay.documents.fastmeta import decoded
    value = "".join(w + g for w, g in zip(words, gaps, strict=False))
    assert decoded(value) == _email_decoded(value)


def test_decoded_takes_raw_8bit_fields_too() -> None:
    """A field with raw UTF-8 (a mail client's Subject) reaches ``decoded`` as the email
    package's Header object (the block is not plain): decoded like before."""
    from mailrelay.documents.fastmeta import decoded
    got = fields("Subject: 关于  印发\r\n".encode())
    assert not isinstance(got, HeaderFields)
    assert decoded(got.get("Subject")) == _email_decoded(got.get("Subject")) != ""
