"""The POP3 core without sockets: states, argument checks, bounds, dot-stuffing, maildrop."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailrelay.pop3.proto import (
    MAX_ERRORS,
    MAX_LINE,
    NEED_DATA,
    Closed,
    Maildrop,
    Pop3Core,
    Pop3Error,
    Request,
    SaslData,
    State,
    dot_stuff,
    top_of,
)


def feed(core: Pop3Core, data: bytes) -> list[object]:
    core.receive_data(data)
    out = []
    while (ev := core.next_event()) is not NEED_DATA:
        out.append(ev)
        if isinstance(ev, Closed):
            break
    return out


def test_commands_by_state() -> None:
    core = Pop3Core(tls=True, tls_available=True)
    assert feed(core, b"STAT\r\n") == []  # RFC 1939 §5: TRANSACTION only
    assert core.data_to_send().startswith(b"-ERR STAT is not valid")
    assert feed(core, b"user zhang.san\r\nPASS a secret with spaces\r\n") == [
        Request("USER", ("zhang.san",)), Request("PASS", ("zhang.san", "a secret with spaces"))]
    assert feed(core, b"PASS again\r\n") == []  # RFC 1939 §7: after PASS, USER again
    assert b"USER first" in core.data_to_send()
    core.logged_in()
    assert feed(core, b"LIST\r\nRETR 2\r\nTOP 1 10\r\nUSER x\r\n") == [
        Request("LIST"), Request("RETR", ("2",)), Request("TOP", ("1", "10"))]
    assert core.data_to_send().startswith(b"-ERR USER is not valid in the transaction")


def test_pass_needs_user_and_arguments_are_checked() -> None:
    core = Pop3Core(tls=True, tls_available=True)
    assert feed(core, b"PASS x\r\n") == []
    assert b"USER first" in core.data_to_send()
    core.logged_in()
    assert feed(core, b"RETR\r\nRETR x\r\nDELE 1 2\r\nTOP 1\r\nRETR 99999999999\r\n") == []
    replies = core.data_to_send().split(b"\r\n")[:-1]
    assert len(replies) == 5 and all(r.startswith(b"-ERR") for r in replies)


def test_no_plaintext_password_before_tls() -> None:
    core = Pop3Core(tls=False, tls_available=True)
    assert feed(core, b"USER a\r\n") == []  # RFC 2595 §2.2
    assert b"[AUTH] Plaintext authentication disallowed" in core.data_to_send()
    assert feed(core, b"AUTH\r\nSTLS\r\n") == [Request("AUTH"), Request("STLS")]
    core.tls_started()
    assert feed(core, b"STLS\r\n") == []
    assert b"-ERR TLS is already active" in core.data_to_send()


def test_tls_start_discards_what_came_before_the_handshake() -> None:
    core = Pop3Core(tls=False, tls_available=True)
    assert feed(core, b"STLS\r\nUSER injected\r\n")[0] == Request("STLS")
    core.tls_started()  # RFC 2595 §4 (the STARTTLS command-injection class of bugs)
    assert feed(core, b"") == []


def test_long_line_closes() -> None:
    core = Pop3Core(tls=True, tls_available=True)
    evs = feed(core, b"USER " + b"a" * MAX_LINE)
    assert evs == [Closed("line too long")]
    assert b"-ERR Command line too long" in core.data_to_send()
    assert core.state is State.CLOSED
    core.receive_data(b"NOOP\r\n")  # nothing more is read once closed
    assert core.next_event() is NEED_DATA


def test_too_many_errors_close() -> None:
    core = Pop3Core(tls=True, tls_available=True)
    evs = feed(core, b"BOGUS\r\n" * MAX_ERRORS)
    assert evs == [Closed("too many errors")]


def test_sasl_lines_are_longer_than_commands() -> None:
    core = Pop3Core(tls=True, tls_available=True)
    core.sasl_started()
    assert feed(core, b"A" * 1000 + b"\r\n") == [SaslData("A" * 1000)]
    core.sasl_ended()
    assert core.state is State.AUTHORIZATION


def test_quit_closes_after_the_reply() -> None:
    core = Pop3Core(tls=True, tls_available=True)
    assert feed(core, b"QUIT\r\n") == [Request("QUIT")]
    core.ok("Bye")
    core.quit()
    assert core.next_event() == Closed("quit")
    assert core.data_to_send() == b"+OK Bye\r\n"


def test_multiline_dot_stuffing() -> None:
    core = Pop3Core(tls=True, tls_available=True)
    core.multiline("2 octets", b".leading\r\nmid\r\n.\r\n..two\r\nno newline")
    assert core.data_to_send() == (b"+OK 2 octets\r\n..leading\r\nmid\r\n..\r\n...two\r\n"
                                   b"no newline\r\n.\r\n")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"a", b".", b"\r\n", b"x.y", b" "]), max_size=40))
def test_dot_stuffing_round_trips(parts: list[bytes]) -> None:
    body = b"".join(parts)
    wire = dot_stuff(body) + b".\r\n"
    lines = wire.split(b"\r\n")
    assert lines[-2:] == [b".", b""]  # exactly one terminator, at the end
    unstuffed = b"\r\n".join(ln[1:] if ln.startswith(b".") else ln for ln in lines[:-2])
    expected = body if body.endswith(b"\r\n") or not body else body + b"\r\n"
    assert unstuffed + b"\r\n" == expected or (not body and unstuffed == b"")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_core_survives_any_input(data: bytes) -> None:
    core = Pop3Core(tls=True, tls_available=True)
    feed(core, data)
    core.logged_in()
    feed(core, data)
    out = core.data_to_send()
    assert all(ln.startswith((b"+OK", b"-ERR")) for ln in out.split(b"\r\n") if ln)


def test_top() -> None:
    raw = b"Subject: s\r\nFrom: a@b\r\n\r\nl1\r\nl2\r\nl3\r\n"
    assert top_of(raw, 0) == b"Subject: s\r\nFrom: a@b\r\n\r\n"
    assert top_of(raw, 2) == b"Subject: s\r\nFrom: a@b\r\n\r\nl1\r\nl2\r\n"
    assert top_of(raw, 10) == raw


def test_maildrop() -> None:
    d = Maildrop(7, [(3, 100), (5, 200), (9, 300)])
    assert d.stat() == "3 600"
    assert d.scan_all() == ["1 100", "2 200", "3 300"]
    assert d.uidl(2) == "2 0000000700000005"
    d.delete(2)
    assert d.stat() == "2 400" and d.scan_all() == ["1 100", "3 300"]
    with pytest.raises(Pop3Error, match="already deleted"):
        d.scan(2)
    with pytest.raises(Pop3Error, match="No such message"):
        d.delete(4)
    d.retrieved.update({1, 2})
    assert d.deleted_uids() == [5] and d.retrieved_uids() == [3]
    d.reset()
    assert d.stat() == "3 600" and d.deleted_uids() == []
