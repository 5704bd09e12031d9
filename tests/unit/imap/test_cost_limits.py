"""Bounded per-session cost in the sans-IO core: sequence-set membership, search-program
and command-size limits, APPEND spooling, COMPRESS only after login, sliced inflate."""

from __future__ import annotations

import zlib

from mailrelay.imap.proto import (
    Append,
    CommandReceived,
    ImapServerCore,
    InputPending,
    Limits,
    SequenceSet,
    SessionState,
    Spool,
    Tagged,
)
from mailrelay.imap.proto.connection import DEFAULT_LIMITS
from mailrelay.imap.proto.items import MAX_SEARCH_KEYS

from .conftest import Link


def test_seqset_merges_once_and_answers_like_the_naive_rule() -> None:
    s = SequenceSet.parse("9:7,1,3:4,2,20:*,15")
    largest = 25
    naive = {n for a, b in s.bounds(largest) for n in range(a, b + 1)}
    assert [n for n in range(0, 30) if s.contains(n, largest)] == sorted(naive)
    assert s.merged(largest) == ([1, 7, 15, 20], [4, 9, 15, 25])
    assert list(s.iter(largest)) == sorted(naive)
    assert s.filter([0, 5, 8, 21, 99], largest) == [8, 21]
    # "*" resolves per call: a different largest value is not served from the cache
    assert s.contains(30, 30) and not s.contains(30, 25)
    assert s == SequenceSet.parse("9:7,1,3:4,2,20:*,15")  # the cache is not compared


def test_huge_sequence_set_parses_to_one_key() -> None:
    link = Link(ImapServerCore(_limits()))
    link.select()
    uids = ",".join(str(n) for n in range(1, 40000, 3))  # ~100 KB, one search key
    cmd = link.command(b"a UID SEARCH UID " + uids.encode())
    assert cmd.key.op == "UID" and cmd.key.args[0].contains(4, 40000)


def _limits() -> dict[SessionState, Limits]:
    authed = Limits(262144, 1 << 20, (1 << 20) + 262144, max_plain=262144, spool_over=1024)
    return {
        **DEFAULT_LIMITS,
        SessionState.AUTHENTICATED: authed,
        SessionState.SELECTED: authed,
    }


def test_search_program_with_too_many_keys_is_bad() -> None:
    link = Link(ImapServerCore(_limits()))
    link.select()
    prog = b" ".join([b"SEEN"] * (MAX_SEARCH_KEYS + 1))
    assert link.send(b"a SEARCH " + prog + b"\r\n")[0].text.startswith("Search program too large")
    assert link.out().startswith(b"a BAD")
    # the session goes on
    assert link.command(b"b SEARCH " + b" ".join([b"SEEN"] * 10)).tag == "b"


def test_non_append_command_over_max_plain_is_refused_before_reading_it() -> None:
    link = Link(ImapServerCore(_limits()))
    link.select()
    link.send(b"a SEARCH BODY {300000}\r\n")  # over max_plain: no "+", no buffering
    out = link.out()
    assert out.startswith(b"a BAD") and b"TOOBIG" in out
    assert link.command(b"b NOOP").tag == "b"


def test_large_append_literal_is_spooled_and_multiappend_parses() -> None:
    link = Link(ImapServerCore(_limits()))
    link.login()
    big = b"Subject: big\r\n\r\n" + b"x" * 5000 + b"\r\n"
    link.send(b"a APPEND INBOX (\\Seen) {%d}\r\n" % len(big))
    assert link.out().startswith(b"+ ")
    link.send(big[:100])
    assert len(link.core._reader.buf) == 0  # written to the spool, not kept in memory
    evs = link.send(big[100:] + b" {5+}\r\nsmall\r\n")
    assert len(evs) == 1 and isinstance(evs[0], CommandReceived)
    cmd = evs[0].command
    assert isinstance(cmd, Append) and cmd.flags == ("\\Seen",)
    assert isinstance(cmd.message, Spool) and cmd.message.read() == big
    assert len(cmd.extra) == 1 and cmd.extra[0].message == b"small"
    cmd.message.close()


def test_compress_refused_before_login_and_not_advertised() -> None:
    from mailrelay.imap.mailbox import capabilities

    link = Link()
    link.send(b"c1 COMPRESS DEFLATE\r\n")
    assert link.out().startswith(b"c1 BAD")
    assert not link.core.compressed
    assert "COMPRESS=DEFLATE" not in capabilities(False, tls=True)
    assert "COMPRESS=DEFLATE" in capabilities(True, tls=True)


def test_deflate_bomb_is_inflated_in_slices() -> None:
    link = Link()
    link.login()
    link.command(b"c1 COMPRESS DEFLATE")
    link.core.send(Tagged("c1", "OK", "on"))
    link.out()
    comp = zlib.compressobj(9, wbits=-15)
    bomb = comp.compress(b"\0" * (20 << 20)) + comp.flush(zlib.Z_SYNC_FLUSH)
    assert len(bomb) < 30000
    link.core.receive_data(bomb)
    pending = 0
    while True:
        ev = link.core.next_event()
        if isinstance(ev, InputPending):
            pending += 1
            # memory stays bounded while inflating: the reader never holds a huge line
            assert len(link.core._reader.buf) <= 8192 + 64 * 1024
            continue
        if ev is not None and not isinstance(ev, InputPending) and repr(ev) == "NEED_DATA":
            break
    assert pending > 50  # the driver got many chances to let others run


def test_discarding_input_closes_a_half_received_spool() -> None:
    link = Link(ImapServerCore(_limits()))
    link.login()
    link.send(b"a APPEND INBOX {5000}\r\n" + b"x" * 3000)
    spool = link.core._reader._spool
    assert spool is not None and spool.size == 3000
    link.core.discard_input()
    assert spool._file is None and link.core._reader._spool is None
