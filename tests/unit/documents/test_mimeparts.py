"""Byte-exact MIME helpers: header encoding, RFC 2231 parameters, multipart splitting."""

from __future__ import annotations

import email.policy
from email import message_from_bytes

from hypothesis import given
from hypothesis import strategies as st

from mailrelay.documents.mimeparts import (
    header,
    normalize_crlf,
    rfc2231_param,
    split_multipart,
    text_header,
)


def _read(field: bytes) -> str:
    msg = message_from_bytes(field + b"\r\n", policy=email.policy.default)
    return str(next(iter(msg.values())))


@given(st.text(min_size=1, max_size=200).filter(lambda t: t.strip()))
def test_text_header_round_trip(text: str) -> None:
    field = text_header("Subject", text)
    assert field.isascii()
    assert all(len(line) <= 78 for line in field.split(b"\r\n"))
    assert _read(field) == " ".join(text.split())


@given(st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=120).filter(lambda t: t.strip() == t))
def test_rfc2231_round_trip(name: str) -> None:
    """Read back as the verifier reads it (compat32 + RFC 2231 collapse). CPython's
    policy.default reader returns '' for a decoded value such as "<>" (its address
    parser takes over), so it cannot be the oracle here."""
    from mailrelay.documents.fastmeta import _filename
    from mailrelay.documents.mimeparts import read_headers
    field = header("Content-Disposition", f"attachment; {rfc2231_param('filename', name)}")
    assert _filename(read_headers(field)) == name
    if "<" not in name and ">" not in name:
        msg = message_from_bytes(field + b"\r\n", policy=email.policy.default)
        assert msg.get_filename() == name


def test_header_folds_at_spaces() -> None:
    units = ", ".join(f"unit-{i:03d}.docs@cx.example" for i in range(40))
    field = header("To", units)
    assert all(len(line) <= 78 for line in field.split(b"\r\n"))
    assert b" ".join(field.split(b"\r\n ")).decode() == f"To: {units}\r\n"


part_text = st.binary(max_size=200).map(lambda b: b.replace(b"--b", b"-_b"))


@given(st.lists(part_text, min_size=1, max_size=5))
def test_split_multipart_is_exact(parts: list[bytes]) -> None:
    body = b"preamble\r\n" + b"".join(b"--b\r\n" + p + b"\r\n" for p in parts) + b"--b--\r\n"
    assert split_multipart(body, "b") == parts


def test_normalize_crlf() -> None:
    assert normalize_crlf(b"a\nb\r\nc\n") == b"a\r\nb\r\nc\r\n"
    assert normalize_crlf(b"a\r\nb") == b"a\r\nb"


def test_normalize_crlf_agrees_with_counting_crlf() -> None:
    """Every string of up to six pieces of a, CR, LF, CRLF: the same answer as the
    plain rule (canonical iff every LF follows a CR)."""
    import itertools

    from mailrelay.documents.mimeparts import normalize_crlf

    def plain(data: bytes) -> bytes:
        lf = data.count(b"\n")
        if lf == 0 or lf == data.count(b"\r\n"):
            return data
        return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    for size in range(7):
        for combo in itertools.product((b"a", b"\r", b"\n", b"\r\n"), repeat=size):
            data = b"".join(combo)
            assert normalize_crlf(data) == plain(data), data


def test_split_head_and_offset_split_agree_with_split_entity() -> None:
    from mailrelay.documents.mimeparts import split_entity, split_head, split_multipart
    for entity in (b"", b"\r\n", b"\r\nbody", b"A: b\r\n", b"A: b\r\n\r\n", b"A: b\r\n\r\nx",
                   b"A: b\r\n\r\n--b\r\none\r\n--b\r\n\r\n--b--\r\n",
                   b"A: b\r\n\r\npre\r\n--b\r\none\r\n--b--", b"\r\n--b\r\nx\r\n--b--"):
        head, body = split_entity(entity)
        got_head, begin = split_head(entity)
        assert (got_head, entity[begin:]) == (head, body), entity
        try:
            want: object = split_multipart(body, "b")
        except ValueError as exc:
            want = str(exc)
        try:
            got: object = split_multipart(entity, "b", begin)
        except ValueError as exc:
            got = str(exc)
        assert got == want, entity


def test_split_head_in_agrees_with_split_entity() -> None:
    from mailrelay.documents.mimeparts import split_entity, split_head_in
    for part in (b"", b"\r", b"\r\n", b"\r\nbody", b"A: b", b"A: b\r\n", b"A: b\r\n\r\n",
                 b"A: b\r\n\r\nx\r\n\r\ny"):
        data = b"pre\r\n\r\n" + part + b"\r\n\r\npost"
        start, end = 7, 7 + len(part)
        head, body_at = split_head_in(data, start, end)
        assert (head, data[body_at:end]) == split_entity(part), part
