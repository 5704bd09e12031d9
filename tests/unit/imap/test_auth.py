"""Not-authenticated state: LOGIN, AUTHENTICATE (SASL-IR, continuations), STARTTLS, state table."""

import base64

from mailrelay.imap.proto import (
    Authenticate,
    AuthResponse,
    CommandRejected,
    Continuation,
    Login,
    SessionState,
    Tagged,
)
from mailrelay.imap.proto.state import ALLOWED, next_state

from .conftest import Link


def test_login_with_quoted_and_atoms(link: Link) -> None:
    assert link.command(b'a LOGIN "al\\"ice" "p\\\\w"') == Login("a", 'al"ice', "p\\w")
    assert link.command(b"b login bob pw") == Login("b", "bob", "pw")


def test_login_password_not_in_repr(link: Link) -> None:
    assert "secret" not in repr(link.command(b"a LOGIN bob secret"))


def test_login_utf8_password(link: Link) -> None:
    cmd = link.command('a LOGIN bob "pässwörd"'.encode())
    assert cmd.password == "pässwörd"


def test_login_ok_moves_to_authenticated_no_keeps_state(link: Link) -> None:
    link.command(b"a LOGIN bob x")
    link.core.send(Tagged("a", "NO", "bad", "AUTHENTICATIONFAILED"))
    assert link.core.state is SessionState.NOT_AUTHENTICATED
    assert link.out() == b"a NO [AUTHENTICATIONFAILED] bad\r\n"
    link.command(b"b LOGIN bob y")
    link.core.send(Tagged("b", "OK", "hi"))
    assert link.core.state is SessionState.AUTHENTICATED


def test_authenticate_with_initial_response(link: Link) -> None:
    ir = base64.b64encode(b"\0bob\0pw")
    cmd = link.command(b"a AUTHENTICATE PLAIN " + ir)
    assert cmd == Authenticate("a", "PLAIN", b"\0bob\0pw")
    assert link.command(b"b AUTHENTICATE PLAIN =").initial_response == b""


def test_authenticate_continuation_exchange(link: Link) -> None:
    cmd = link.command(b"a AUTHENTICATE SCRAM-SHA-256")
    assert cmd.initial_response is None
    link.core.send(Continuation(""))
    assert link.out() == b"+ \r\n"
    evs = link.send(base64.b64encode(b"n,,n=bob,r=abc") + b"\r\n")
    assert evs == [AuthResponse("a", b"n,,n=bob,r=abc")]
    link.core.send(Continuation(base64.b64encode(b"r=abcdef").decode()))
    evs = link.send(b"Zm9v\r\n")
    assert evs == [AuthResponse("a", b"foo")]
    link.core.send(Tagged("a", "OK", "welcome"))
    assert link.core.state is SessionState.AUTHENTICATED
    assert link.command(b"b NOOP").tag == "b"


def test_authenticate_cancel(link: Link) -> None:
    link.command(b"a AUTHENTICATE PLAIN")
    link.core.send(Continuation(""))
    assert link.send(b"*\r\n") == [AuthResponse("a", b"", cancelled=True)]
    link.core.send(Tagged("a", "BAD", "cancelled"))
    assert link.core.state is SessionState.NOT_AUTHENTICATED


def test_authenticate_bad_base64(link: Link) -> None:
    link.command(b"a AUTHENTICATE PLAIN")
    link.core.send(Continuation(""))
    link.out()
    evs = link.send(b"!!!notbase64\r\n")
    assert isinstance(evs[0], CommandRejected)
    assert link.out().startswith(b"a BAD")
    assert link.command(b"b NOOP").tag == "b"


def test_authenticate_bad_initial_response(link: Link) -> None:
    link.send(b"a AUTHENTICATE PLAIN ###\r\n")
    assert link.out().startswith(b"a BAD")


def test_starttls_drops_pipelined_plaintext(link: Link) -> None:
    evs = link.send(b"a STARTTLS\r\nb LOGIN evil injected\r\n")
    assert evs[0].command.tag == "a"
    # the server answers before reading further
    link.core.send(Tagged("a", "OK", "Begin TLS"))
    assert link.send(b"") != []  # nothing left but EOF
    assert link.core.state is SessionState.NOT_AUTHENTICATED


def test_commands_not_valid_before_login(link: Link) -> None:
    for line in (b"a SELECT INBOX", b'a LIST "" *', b"a FETCH 1 FLAGS", b"a IDLE"):
        evs = link.send(line + b"\r\n")
        assert isinstance(evs[0], CommandRejected)
        assert link.out().startswith(b"a BAD")


def test_login_not_valid_after_login(link: Link) -> None:
    link.login()
    link.send(b"a LOGIN x y\r\n")
    assert link.out().startswith(b"a BAD")


def test_any_state_commands(link: Link) -> None:
    for line in (b"a CAPABILITY", b"a NOOP", b"a ID NIL"):
        link.command(line)


def test_logout_moves_to_logout(link: Link) -> None:
    link.command(b"z LOGOUT")
    from mailrelay.imap.proto import Bye

    link.core.send(Bye())
    link.core.send(Tagged("z", "OK", "bye"))
    assert link.core.state is SessionState.LOGOUT
    assert link.out() == b"* BYE Logging out\r\nz OK bye\r\n"


def test_transition_table_is_complete() -> None:
    from mailrelay.imap.proto import commands as c

    assert ALLOWED[SessionState.LOGOUT] == frozenset()
    assert c.Fetch in ALLOWED[SessionState.SELECTED]
    assert c.Fetch not in ALLOWED[SessionState.AUTHENTICATED]
    sel = c.Select("t", "INBOX")
    assert next_state(SessionState.SELECTED, sel, "NO") is SessionState.AUTHENTICATED
    assert next_state(SessionState.SELECTED, c.Close("t"), "OK") is SessionState.AUTHENTICATED
    assert next_state(SessionState.AUTHENTICATED, sel, "OK") is SessionState.SELECTED
