"""\\Recent (RFC 3501 §2.3.2): each message is recent in exactly one read-write session."""

from __future__ import annotations

import re

import pytest

from .fakestore import FakeStore
from .test_session import MSG1, MSG2, Client


@pytest.fixture
def store() -> FakeStore:
    s = FakeStore()
    s.deliver("INBOX", MSG1)
    s.deliver("INBOX", MSG2, flags={"\\Seen"})
    return s


async def login(store: FakeStore) -> Client:
    c = Client(store)
    assert "a OK" in await c.cmd("a LOGIN alice secret")
    return c


def recent_of(out: str) -> int:
    m = re.search(r"\* (\d+) RECENT", out)
    assert m, out
    return int(m.group(1))


async def test_first_select_takes_recent_second_gets_none(store: FakeStore) -> None:
    a, b = await login(store), await login(store)
    assert "STATUS \"INBOX\" (RECENT 2)" in await a.cmd("s STATUS INBOX (RECENT)")
    out = await a.cmd("b SELECT INBOX")
    assert recent_of(out) == 2
    out = await a.cmd("f FETCH 1:* FLAGS")
    assert "* 1 FETCH (FLAGS (\\Recent))" in out
    assert "* 2 FETCH (FLAGS (\\Recent \\Seen))" in out
    assert "STATUS \"INBOX\" (RECENT 0)" in await b.cmd("s STATUS INBOX (RECENT)")
    out = await b.cmd("b SELECT INBOX")
    assert recent_of(out) == 0
    assert "\\Recent" not in await b.cmd("f FETCH 1:* FLAGS")
    # a later SELECT in the same session keeps nothing either: the claim is spent
    assert recent_of(await a.cmd("c SELECT INBOX")) == 0


async def test_examine_does_not_take_recent(store: FakeStore) -> None:
    a = await login(store)
    out = await a.cmd("e EXAMINE INBOX")
    assert recent_of(out) == 2 and "[READ-ONLY]" in out
    assert "\\Recent" in await a.cmd("f FETCH 1 FLAGS")
    out = await a.cmd("s SELECT INBOX")
    assert recent_of(out) == 2  # RFC 3501 §6.3.2: EXAMINE must not clear \Recent


async def test_new_arrival_is_recent_in_exactly_one_session(store: FakeStore) -> None:
    a, b = await login(store), await login(store)
    await a.cmd("s SELECT INBOX")
    await b.cmd("s SELECT INBOX")
    store.deliver("INBOX", b"Subject: new\r\n\r\nnew\r\n")
    changes = await store.changes_since(1, 3)
    await b.session.notify(changes)
    await a.session.notify(changes)
    out_b = await b.cmd("n NOOP")
    out_a = await a.cmd("n NOOP")
    assert "* 3 EXISTS" in out_a and "* 3 EXISTS" in out_b
    assert "* 1 RECENT" in out_b and "RECENT" not in out_a.replace("* 3 EXISTS", "")
    assert "\\Recent" in await b.cmd("f FETCH 3 FLAGS")
    assert "\\Recent" not in await a.cmd("f FETCH 3 FLAGS")


async def test_append_to_selected_mailbox_is_recent_here(store: FakeStore) -> None:
    a = await login(store)
    assert recent_of(await a.cmd("s SELECT INBOX")) == 2
    out = await a.send(b"p APPEND INBOX {12+}\r\nSubject: x\r\n\r\n")
    assert "* 3 EXISTS" in out.decode() and "* 3 RECENT" in out.decode()
    assert "\\Recent" in await a.cmd("f FETCH 3 FLAGS")


async def test_search_recent_new_old(store: FakeStore) -> None:
    a = await login(store)
    await a.cmd("s SELECT INBOX")
    assert "* SEARCH 1 2\r\n" in await a.cmd("r SEARCH RECENT")
    assert "* SEARCH 1\r\n" in await a.cmd("r SEARCH NEW")
    assert "* SEARCH\r\n" in await a.cmd("r SEARCH OLD")
    b = await login(store)
    await b.cmd("s SELECT INBOX")
    assert "* SEARCH\r\n" in await b.cmd("r SEARCH RECENT")
    assert "* SEARCH 1 2\r\n" in await b.cmd("r SEARCH OLD")


async def test_store_keeps_recent_and_expunge_updates_count(store: FakeStore) -> None:
    a = await login(store)
    await a.cmd("s SELECT INBOX")
    out = await a.cmd("t STORE 1 FLAGS (\\Deleted \\Recent)")
    assert "* 1 FETCH (FLAGS (\\Deleted \\Recent))" in out  # \Recent cannot be set or cleared
    out = await a.cmd("x EXPUNGE")
    assert out.index("* 1 EXPUNGE") < out.index("* 1 RECENT")
    assert "x OK" in out
