"""Framing: lines, literals, LITERAL+, limits, malformed input, COMPRESS."""

import zlib

from mailrelay.imap.proto import (
    CommandReceived,
    CommandRejected,
    Compress,
    ConnectionClosed,
    ImapServerCore,
    Limits,
    Login,
    SessionState,
    Tagged,
)

from .conftest import Link


def test_simple_command_and_partial_delivery(link: Link) -> None:
    assert link.send(b"a1 NO") == []
    evs = link.send(b"OP\r\n")
    assert len(evs) == 1 and evs[0].command.tag == "a1"


def test_pipelined_commands_come_out_in_order(link: Link) -> None:
    evs = link.send(b"a1 NOOP\r\na2 CAPABILITY\r\na3 NOOP\r\n")
    assert [e.command.tag for e in evs] == ["a1", "a2", "a3"]


def test_bare_lf_line_end_is_accepted(link: Link) -> None:
    assert link.command(b"a1 NOOP\n"[:-1]).tag == "a1"
    evs = link.send(b"a2 NOOP\n")
    assert evs[0].command.tag == "a2"


def test_synchronising_literal_gets_continuation(link: Link) -> None:
    assert link.send(b"a1 LOGIN {5}\r\n") == []
    assert link.out() == b"+ Ready for literal data\r\n"
    assert link.send(b"alice") == []
    assert link.send(b" {3}\r\n") == []
    assert link.out().startswith(b"+ ")
    evs = link.send(b"p w\r\n")
    assert evs == [CommandReceived(Login("a1", "alice", "p w"))]


def test_literal_plus_needs_no_continuation(link: Link) -> None:
    evs = link.send(b"a1 LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n")
    assert evs == [CommandReceived(Login("a1", "alice", "secret"))]
    assert link.out() == b""


def test_huge_sync_literal_in_login_is_refused_and_not_buffered(link: Link) -> None:
    evs = link.send(b"a1 LOGIN {104857600}\r\n")
    assert evs == [CommandRejected("a1", "Literal too large")]
    assert link.out() == b"a1 BAD [TOOBIG] Literal too large\r\n"
    assert len(link.core._reader.buf) == 0
    # the connection continues
    assert link.command(b"a2 NOOP").tag == "a2"


def test_huge_nonsync_literal_closes_with_bye(link: Link) -> None:
    evs = link.send(b"a1 LOGIN {104857600+}\r\n" + b"x" * 1000)
    assert isinstance(evs[-1], ConnectionClosed)
    assert link.out().startswith(b"* BYE [TOOBIG]")
    assert link.core.state is SessionState.LOGOUT
    assert link.send(b"a2 NOOP\r\n") == []


def test_line_too_long_is_skipped_with_bad(link: Link) -> None:
    evs = link.send(b"a1 LOGIN " + b"x" * 20000)
    assert evs == []
    assert len(link.core._reader.buf) < 10000  # not buffered
    evs = link.send(b"yyy\r\na2 NOOP\r\n")
    assert isinstance(evs[0], CommandRejected) and evs[0].tag == "a1"
    assert link.out().startswith(b"a1 BAD [TOOBIG]")
    assert evs[1].command.tag == "a2"


def test_limits_grow_after_login(link: Link) -> None:
    link.login()
    assert link.send(b"a1 APPEND INBOX {100000}\r\n") == []
    assert link.out().startswith(b"+ ")


def test_custom_limits_per_state() -> None:
    limits = {s: Limits(100, 10, 200) for s in SessionState}
    link = Link(ImapServerCore(limits))
    link.send(b"a1 LOGIN {11}\r\n")
    assert link.out() == b"a1 BAD [TOOBIG] Literal too large\r\n"


def test_append_too_big_after_login_is_no_toobig() -> None:
    link = Link(ImapServerCore({s: Limits(100, 10, 200) for s in SessionState}))
    link.login()
    link.send(b"a1 APPEND INBOX {11}\r\n")
    assert link.out() == b"a1 NO [TOOBIG] Literal too large\r\n"


def test_malformed_gives_tagged_bad_and_continues(link: Link) -> None:
    evs = link.send(b'a1 LOGIN "unterminated\r\n')
    assert isinstance(evs[0], CommandRejected)
    assert link.out().startswith(b"a1 BAD")
    assert link.command(b"a2 NOOP").tag == "a2"


def test_missing_tag_gives_untagged_bad(link: Link) -> None:
    link.send(b"\r\n")
    assert link.out() == b"* BAD Missing or invalid tag\r\n"
    link.send(b"+tag NOOP\r\n")
    assert link.out().startswith(b"* BAD")


def test_unknown_command(link: Link) -> None:
    link.send(b"a1 FROB\r\n")
    assert link.out() == b"a1 BAD Unknown command FROB\r\n"


def test_extra_arguments_are_bad(link: Link) -> None:
    link.send(b"a1 NOOP extra\r\n")
    assert link.out().startswith(b"a1 BAD")


def test_eof_reports_closed(link: Link) -> None:
    link.send(b"a1 NOOP\r\n")
    assert isinstance(link.send(b"")[0], ConnectionClosed)


def test_compress_deflate_switches_both_directions(link: Link) -> None:
    link.login()
    cmd = link.command(b"c1 COMPRESS DEFLATE")
    assert cmd == Compress("c1", "DEFLATE")
    link.core.send(Tagged("c1", "OK", "DEFLATE active"))
    assert link.out() == b"c1 OK DEFLATE active\r\n"  # the OK itself is not compressed
    assert link.core.compressed
    comp = zlib.compressobj(wbits=-15)
    data = comp.compress(b"a2 NOOP\r\n") + comp.flush(zlib.Z_SYNC_FLUSH)
    evs = link.send(data)
    assert evs[0].command.tag == "a2"
    link.core.send(Tagged("a2", "OK", "done"))
    assert zlib.decompressobj(-15).decompress(link.out()) == b"a2 OK done\r\n"


def test_compress_garbage_closes(link: Link) -> None:
    link.login()
    link.command(b"c1 COMPRESS DEFLATE")
    link.core.send(Tagged("c1", "OK", "on"))
    link.out()
    evs = link.send(b"\xff\xff\xff\xff not deflate")
    assert isinstance(evs[-1], ConnectionClosed)
