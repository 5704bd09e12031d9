"""End-to-end transcripts: bytes → core → ImapSession → FakeStore → bytes (no sockets)."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime

import pytest

from mailrelay.imap.proto import NEED_DATA, Event, ImapServerCore, SessionState
from mailrelay.imap.session import ImapSession

from .fakestore import FakeAuth, FakeStore

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
MSG1 = b"From: Bob <bob@example.com>\r\nSubject: hello\r\n\r\nfirst body\r\n"
MSG2 = b"From: carol@example.com\r\nSubject: second\r\n\r\nsecond body\r\n"


class Client:
    def __init__(self, store: FakeStore | None = None, tls: bool = True) -> None:
        self.store = store or FakeStore()
        self.core = ImapServerCore()
        self.session = ImapSession(self.core, self.store, FakeAuth(), tls=tls)
        self.session.greeting()
        self.greeting = self.core.data_to_send()

    async def send(self, data: bytes) -> bytes:
        self.core.receive_data(data)
        while (ev := self.core.next_event()) is not NEED_DATA:
            assert isinstance(ev, Event)
            await self.session.handle(ev, NOW)
        return self.core.data_to_send()

    async def cmd(self, line: str) -> str:
        return (await self.send(line.encode() + b"\r\n")).decode("utf-8", "replace")


@pytest.fixture
def store() -> FakeStore:
    s = FakeStore()
    s.deliver("INBOX", MSG1)
    s.deliver("INBOX", MSG2, flags={"\\Seen"})
    s.boxes["INBOX"].recent_uid = 3  # an earlier session took \\Recent (see test_recent.py)
    return s


async def selected(store: FakeStore, **kw) -> Client:
    c = Client(store, **kw)
    assert "OK [CAPABILITY" in await c.cmd("a LOGIN alice secret")
    out = await c.cmd("b SELECT INBOX")
    assert "b OK [READ-WRITE]" in out
    return c


async def test_greeting_and_login_requires_tls() -> None:
    c = Client(tls=False)
    assert c.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1")
    assert b"LOGINDISABLED" in c.greeting and b"STARTTLS" in c.greeting
    assert "a NO [PRIVACYREQUIRED]" in await c.cmd("a LOGIN alice secret")
    assert "s OK" in await c.cmd("s STARTTLS")
    c.session.tls_started()
    assert "b OK [CAPABILITY" in await c.cmd("b LOGIN alice secret")
    assert c.core.state is SessionState.AUTHENTICATED


async def test_login_failure_and_authenticate_plain() -> None:
    c = Client()
    assert "a NO [AUTHENTICATIONFAILED]" in await c.cmd("a LOGIN alice wrong")
    out = await c.cmd("b AUTHENTICATE PLAIN")
    assert out == "+ \r\n"
    out = await c.cmd(base64.b64encode(b"\0alice\0secret").decode())
    assert out.startswith("b OK [CAPABILITY")
    assert c.session.user == "alice"


async def test_select_fetch_store_search_expunge(store: FakeStore) -> None:
    c = await selected(store)
    out = await c.cmd("f FETCH 1:* (UID FLAGS)")
    assert "* 1 FETCH (UID 1 FLAGS ())" in out and "* 2 FETCH (UID 2 FLAGS (\\Seen))" in out
    out = await c.cmd("f2 FETCH 1 (BODY[TEXT] ENVELOPE)")
    assert "BODY[TEXT] {12}\r\nfirst body\r\n" in out
    assert "FLAGS (\\Seen)" in out  # non-peek BODY[] sets \Seen and reports it
    out = await c.cmd("s STORE 2 +FLAGS (\\Deleted)")
    assert "* 2 FETCH (FLAGS (\\Deleted \\Seen))" in out
    assert "s OK" in out
    assert "* SEARCH 2" in await c.cmd("q SEARCH DELETED")
    assert '* ESEARCH (TAG "q2") UID MIN 1 MAX 2 COUNT 2' in await c.cmd(
        "q2 UID SEARCH RETURN (MIN MAX COUNT) ALL"
    )
    out = await c.cmd("e EXPUNGE")
    assert "* 2 EXPUNGE" in out and "e OK" in out
    assert "* SEARCH 1" in await c.cmd("q3 SEARCH BODY first")
    assert "NO [BADCHARSET" in await c.cmd("q4 SEARCH CHARSET KOI8-R ALL")


async def test_copy_move_uidplus(store: FakeStore) -> None:
    c = await selected(store)
    out = await c.cmd("c COPY 1 Sent")
    assert "c OK [COPYUID 1000 1 1]" in out
    out = await c.cmd("m UID MOVE 2 Trash")
    assert "* OK [COPYUID 1000 2 1]" in out
    assert "* 2 EXPUNGE" in out and out.endswith("m OK Move completed\r\n")
    assert "NO [TRYCREATE]" in await c.cmd("x COPY 1 Nowhere")


async def test_append_and_exists_update(store: FakeStore) -> None:
    c = await selected(store)
    out = await c.send(b"a APPEND INBOX (\\Flagged) {11+}\r\nSubject: x\r\n\r\n")
    text = out.decode()
    assert "* 3 EXISTS" in text
    assert re.search(r"a OK \[APPENDUID 1000 3\]", text)


async def test_idle_gets_notifications(store: FakeStore) -> None:
    c = await selected(store)
    assert await c.cmd("i IDLE") == "+ idling\r\n"
    uid = store.deliver("INBOX", b"Subject: new\r\n\r\nnew")
    await c.session.notify(await store.changes_since(1, 3))
    assert c.core.data_to_send() == b"* 3 EXISTS\r\n* 1 RECENT\r\n"
    assert uid == 3
    assert await c.cmd("DONE") == "i OK IDLE terminated\r\n"


async def test_condstore_qresync(store: FakeStore) -> None:
    c = Client(store)
    await c.cmd("a LOGIN alice secret")
    assert "* ENABLED QRESYNC" in await c.cmd("e ENABLE QRESYNC")
    out = await c.cmd("s SELECT INBOX (QRESYNC (1000 2))")
    assert "HIGHESTMODSEQ" in out
    await c.cmd("d STORE 1 +FLAGS.SILENT (\\Deleted)")
    out = await c.cmd("x EXPUNGE")
    assert "* VANISHED 1" in out
    out = await c.cmd("f UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")
    assert "* VANISHED (EARLIER) 1" in out
    out = await c.cmd("u STORE 1 (UNCHANGEDSINCE 1) +FLAGS (\\Flagged)")
    assert "u OK [MODIFIED 1]" in out


async def test_list_status_namespace_quota(store: FakeStore) -> None:
    c = Client(store)
    await c.cmd("a LOGIN alice secret")
    out = await c.cmd('l LIST "" "*" RETURN (SPECIAL-USE CHILDREN STATUS (MESSAGES))')
    assert '* LIST (\\Sent \\HasNoChildren) "/" "Sent"' in out
    assert '* STATUS "INBOX" (MESSAGES 2)' in out
    assert '* STATUS "INBOX" (MESSAGES 2 UNSEEN 1)' in await c.cmd(
        "s STATUS INBOX (MESSAGES UNSEEN)"
    )
    assert '* NAMESPACE (("" "/")) NIL NIL' in await c.cmd("n NAMESPACE")
    assert '* QUOTA "" (STORAGE 10 1024)' in await c.cmd("q GETQUOTAROOT INBOX")
    assert "c OK" in await c.cmd("c CREATE &ZeVnLIqe-")
    assert '"&ZeVnLIqe-"' in await c.cmd('l2 LIST "" %')
    assert "NO [CANNOT]" in await c.cmd("d DELETE INBOX")
    assert "* ID (" in await c.cmd("i ID NIL")


async def test_examine_is_read_only_and_close(store: FakeStore) -> None:
    c = Client(store)
    await c.cmd("a LOGIN alice secret")
    assert "OK [READ-ONLY]" in await c.cmd("x EXAMINE INBOX")
    assert "NO [READ-ONLY]" in await c.cmd("s STORE 1 +FLAGS (\\Seen)")
    await c.cmd("f FETCH 1 BODY[]")
    assert "\\Seen" not in store.boxes["INBOX"].rows[1].flags  # EXAMINE never sets \Seen
    assert "c OK" in await c.cmd("c CLOSE")
    assert c.core.state is SessionState.AUTHENTICATED


async def test_bad_sequence_number(store: FakeStore) -> None:
    c = await selected(store)
    assert "f BAD" in await c.cmd("f FETCH 9 FLAGS")
    assert "* " not in await c.cmd("u UID FETCH 9 FLAGS")


async def test_logout(store: FakeStore) -> None:
    c = Client(store)
    out = await c.cmd("z LOGOUT")
    assert out == "* BYE Logging out\r\nz OK Completed\r\n"
    assert c.core.state is SessionState.LOGOUT
