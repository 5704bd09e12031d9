"""Issue 18 item 1/3: the core is the one source of session state; CONDSTORE enabling.

RFC 3501 §6.3.1 (a failed SELECT deselects), RFC 7162 §3.1 (CONDSTORE-enabling
commands, HIGHESTMODSEQ, UID and MODSEQ in FETCH), §3.2.11 (CLOSED).
"""

from __future__ import annotations

import pytest

from mailrelay.imap.proto import SessionState

from .fakestore import FakeStore
from .test_session import MSG1, MSG2, Client


@pytest.fixture
def store() -> FakeStore:
    s = FakeStore()
    s.deliver("INBOX", MSG1)
    s.deliver("INBOX", MSG2, flags={"\\Seen"})
    s.boxes["INBOX"].recent_uid = 3  # no \\Recent in these replies (see test_recent.py)
    return s


async def logged_in(store: FakeStore) -> Client:
    c = Client(store)
    assert "a OK" in await c.cmd("a LOGIN alice secret")
    return c


@pytest.mark.parametrize(
    "bad_select",
    ["b SELECT Nosuch", "b EXAMINE Nosuch", "b SELECT INBOX (QRESYNC (1 1))"],
)
async def test_failed_select_deselects_and_nothing_trips(store: FakeStore, bad_select: str) -> None:
    c = await logged_in(store)
    assert "s OK" in await c.cmd("s SELECT INBOX")
    out = await c.cmd(bad_select)
    assert "b NO" in out or "b BAD" in out
    assert c.core.state is SessionState.AUTHENTICATED and c.session.view is None
    # commands of the selected state are refused by the core, never a server error
    for line in ("f FETCH 1 FLAGS", "t STORE 1 +FLAGS (\\Seen)", "x SEARCH ALL", "e EXPUNGE"):
        out = await c.cmd(line)
        assert f"{line[0]} BAD" in out and "SERVERBUG" not in out
    assert "s OK" in await c.cmd("s SELECT INBOX")
    assert c.session.view is not None and c.session.view.exists == 2


async def test_unselect_and_close_leave_no_view(store: FakeStore) -> None:
    c = await logged_in(store)
    for leave in ("u UNSELECT", "u CLOSE"):
        assert "s OK" in await c.cmd("s SELECT INBOX")
        assert "u OK" in await c.cmd(leave)
        assert c.core.state is SessionState.AUTHENTICATED and c.session.view is None


async def test_qresync_select_over_selected_sends_closed(store: FakeStore) -> None:
    c = await logged_in(store)
    assert "ENABLED QRESYNC" in await c.cmd("e ENABLE QRESYNC")
    await c.cmd("s SELECT INBOX")
    out = await c.cmd("s2 SELECT INBOX")
    assert out.index("* OK [CLOSED]") < out.index("FLAGS")  # RFC 7162 §3.2.11


@pytest.mark.parametrize(
    "command",
    [
        "c FETCH 1 (FLAGS MODSEQ)",
        "c FETCH 1:* FLAGS (CHANGEDSINCE 1)",
        "c SEARCH MODSEQ 1",
        "c STORE 1 (UNCHANGEDSINCE 100) +FLAGS (\\Flagged)",
        "c STATUS INBOX (HIGHESTMODSEQ)",
    ],
)
async def test_condstore_enabling_commands(store: FakeStore, command: str) -> None:
    c = await logged_in(store)
    await c.cmd("s SELECT INBOX")
    out = await c.cmd(command)
    assert "* OK [HIGHESTMODSEQ " in out and "c OK" in out  # RFC 7162 §3.1
    assert "CONDSTORE" in c.session.enabled
    # from now on other sessions' changes arrive with UID and MODSEQ
    other = await logged_in(store)
    await other.cmd("s SELECT INBOX")
    await other.cmd("t STORE 2 +FLAGS (\\Answered)")
    out = await c.cmd("n NOOP")
    assert "* 2 FETCH (UID 2 FLAGS (\\Answered \\Seen) MODSEQ (" in out
    # a second enabling command says nothing more
    assert "HIGHESTMODSEQ" not in await c.cmd("c2 FETCH 1 (MODSEQ)")


async def test_store_reply_has_uid_and_modseq_with_condstore(store: FakeStore) -> None:
    c = await logged_in(store)
    await c.cmd("s SELECT INBOX (CONDSTORE)")
    out = await c.cmd("t STORE 1 +FLAGS ($Work)")
    # a new keyword is announced before the FETCH that carries it
    assert out.index("* FLAGS (") < out.index("* 1 FETCH (UID 1 FLAGS ($Work) MODSEQ (")
    assert "$Work \\*)]" in out
    out = await c.cmd("t STORE 1 +FLAGS.SILENT (\\Flagged)")
    assert "* 1 FETCH (UID 1 MODSEQ (" in out and "FLAGS (" not in out


async def test_select_announces_existing_keywords(store: FakeStore) -> None:
    c = await logged_in(store)
    await c.cmd("s SELECT INBOX")
    await c.cmd("t STORE 2 +FLAGS ($Todo)")
    d = await logged_in(store)
    out = await d.cmd("s SELECT INBOX")
    assert "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Todo)" in out


async def test_implicit_seen_reports_uid_and_modseq_with_condstore(store: FakeStore) -> None:
    c = await logged_in(store)
    await c.cmd("s SELECT INBOX (CONDSTORE)")
    out = await c.cmd("f FETCH 1 BODY[TEXT]")
    # RFC 3501 §6.4.5 FLAGS for the implicit \Seen; RFC 7162 §3.1 with UID and MODSEQ
    assert "FLAGS (\\Seen)" in out and "UID 1" in out and "MODSEQ (" in out
