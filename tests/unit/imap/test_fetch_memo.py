"""A FETCH parsed again from its remembered items (mailrelay.imap.proto.parser) and the
cached FetchPlan (mailrelay.imap.fetch) give exactly what the full parser gives."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailrelay.imap import fetch as fetchmod
from mailrelay.imap.proto import ParseError, parse_command
from mailrelay.imap.proto import commands as c
from mailrelay.imap.proto import parser as parser_mod

ITEMS = [
    b"(BODY.PEEK[])",
    b"(UID FLAGS)",
    b"(BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)] RFC822.SIZE)",
    b"FAST",
    b"(FLAGS) (CHANGEDSINCE 5)",
    b"(FLAGS) (CHANGEDSINCE 5 VANISHED)",
    b"(BINARY[1]<0.10>)",
]


def _full(line: bytes) -> object:
    """The full parser's answer (result or error), the memo bypassed."""
    try:
        return parser_mod._parse([line], False)
    except ParseError as exc:
        return ("error", str(exc), exc.tag)


def _memo(line: bytes) -> object:
    try:
        return parse_command([line])
    except ParseError as exc:
        return ("error", str(exc), exc.tag)


@settings(max_examples=300, deadline=None)
@given(
    tag=st.sampled_from([b"a1", b"T99", b"x.y", b"+a", b"a+", b""]),
    uid=st.sampled_from([b"UID ", b"uid ", b""]),
    fetch=st.sampled_from([b"FETCH", b"fetch", b"FETCHX"]),
    seqs=st.sampled_from([b"1", b"1:*", b"3,5:7", b"0", b"1:", b"*", b"4294967296", b"2,"]),
    items=st.sampled_from(ITEMS + [b"(BOGUS)", b"(FLAGS) (VANISHED)"]),
)
def test_second_parse_equals_full_parse(
    tag: bytes, uid: bytes, fetch: bytes, seqs: bytes, items: bytes
) -> None:
    line = tag + b" " + uid + fetch + b" " + seqs + b" " + items
    # prime the memo with a valid command of the same shape, then parse the line
    _memo(b"p1 " + uid + fetch + b" 1 " + items)
    assert _memo(line) == _full(line)


def test_pipelined_fetches_share_items() -> None:
    a = parse_command([b"A1 UID FETCH 1 (BODY.PEEK[])"])
    b = parse_command([b"A2 UID FETCH 2 (BODY.PEEK[])"])
    assert isinstance(a, c.Fetch) and isinstance(b, c.Fetch)
    assert (a.tag, b.tag) == ("A1", "A2")
    assert b == parser_mod._parse([b"A2 UID FETCH 2 (BODY.PEEK[])"], False)
    assert a.attrs is b.attrs  # one tuple: its FetchPlan is worked out once
    assert fetchmod.plan(a.attrs) is fetchmod.plan(b.attrs)


@pytest.mark.parametrize("items", ITEMS)
def test_plan_matches_the_predicates(items: bytes) -> None:
    cmd = parse_command([b"t UID FETCH 1 " + items])
    assert isinstance(cmd, c.Fetch)
    attrs = cmd.attrs
    p = fetchmod.plan(attrs)
    assert (p.raw, p.structure, p.envelope_only, p.sets_seen) == (
        fetchmod.needs_raw(attrs),
        fetchmod.needs_structure(attrs),
        fetchmod.envelope_only(attrs),
        fetchmod.sets_seen(attrs),
    )
    assert p.has_flags == any(a.name == "FLAGS" for a in attrs)
    # a list (mutable) is never cached, the same answer still comes out
    assert fetchmod.plan(list(attrs)) == p
