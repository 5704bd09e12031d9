"""IDLE (RFC 2177): continuation, DONE, unsolicited updates while idling."""

from mailrelay.imap.proto import (
    CommandRejected,
    Continuation,
    Idle,
    IdleDone,
    Tagged,
    Untagged,
)

from .conftest import Link


def test_idle_done_cycle() -> None:
    link = Link()
    link.select()
    assert link.command(b"i1 IDLE") == Idle("i1")
    link.core.send(Continuation("idling"))
    assert link.core.idling
    link.core.send(Untagged("3 EXISTS"))
    assert link.out() == b"+ idling\r\n* 3 EXISTS\r\n"
    assert link.send(b"DO") == []
    assert link.send(b"NE\r\n") == [IdleDone("i1")]
    link.core.send(Tagged("i1", "OK", "IDLE terminated"))
    assert not link.core.idling
    assert link.command(b"a NOOP").tag == "a"


def test_idle_done_is_case_insensitive() -> None:
    link = Link()
    link.login()
    link.command(b"i IDLE")
    link.core.send(Continuation("idling"))
    assert link.send(b"done\r\n") == [IdleDone("i")]


def test_idle_garbage_instead_of_done() -> None:
    link = Link()
    link.login()
    link.command(b"i IDLE")
    link.core.send(Continuation("idling"))
    link.out()
    evs = link.send(b"a NOOP\r\n")
    assert evs == [CommandRejected("i", "Expected DONE")]
    assert link.out() == b"i BAD Expected DONE\r\n"
    assert not link.core.idling


def test_commands_pipelined_after_done_are_parsed() -> None:
    link = Link()
    link.login()
    link.command(b"i IDLE")
    link.core.send(Continuation("idling"))
    evs = link.send(b"DONE\r\nb NOOP\r\n")
    assert evs[0] == IdleDone("i")
    # the core keeps parsing; the server answers i before b
    assert evs[1].command.tag == "b"
