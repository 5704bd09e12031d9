"""Large FETCH/SEARCH go out in chunks: one query per chunk, output flushed between them."""

from __future__ import annotations

import pytest

from mailrelay.imap import session as sessmod

from .fakestore import FakeStore
from .test_session import Client


class CountingStore(FakeStore):
    def __init__(self) -> None:
        super().__init__()
        self.fetches: list[tuple[int, bool]] = []

    async def fetch(self, mailbox_id, uids, *, raw, structure, envelope_only=False):
        self.fetches.append((len(uids), raw))
        return await super().fetch(
            mailbox_id, uids, raw=raw, structure=structure, envelope_only=envelope_only
        )


@pytest.fixture
def store() -> CountingStore:
    s = CountingStore()
    for i in range(25):
        s.deliver("INBOX", b"Subject: m%d\r\n\r\n" % i + b"x" * (100 if i != 7 else 5000) + b"\r\n")
    return s


async def test_fetch_in_chunks_with_flushes(store: CountingStore, monkeypatch) -> None:
    monkeypatch.setattr(sessmod, "CHUNK_ROWS", 10)
    monkeypatch.setattr(sessmod, "CHUNK_BYTES", 1000)
    c = Client(store)
    await c.cmd("a LOGIN alice secret")
    await c.cmd("s SELECT INBOX")
    written: list[bytes] = []

    async def flush() -> bool:
        written.append(c.core.data_to_send())
        return True

    c.session.flush_output = flush
    store.fetches.clear()
    out = await c.cmd("f FETCH 1:* (UID FLAGS)")
    assert [n for n, _ in store.fetches] == [10, 10, 5]  # by rows without bodies
    whole = b"".join(written).decode() + out
    assert whole.count(" FETCH (") == 25 and whole.endswith("f OK Fetch completed\r\n")
    assert len(written) == 3 and written[0].count(b"FETCH") == 10
    store.fetches.clear()
    written.clear()
    out = await c.cmd("g FETCH 1:* (BODY.PEEK[])")
    sizes = [n for n, raw in store.fetches]
    assert sum(sizes) == 25 and max(sizes) <= 10
    assert 1 in sizes  # the 5,000-byte message (seq 8) is loaded on its own
    whole = b"".join(written).decode() + out
    assert whole.count(" FETCH (") == 25 and "m24" in whole


async def test_fetch_stops_when_connection_is_gone(store: CountingStore, monkeypatch) -> None:
    monkeypatch.setattr(sessmod, "CHUNK_ROWS", 10)
    c = Client(store)
    await c.cmd("a LOGIN alice secret")
    await c.cmd("s SELECT INBOX")

    async def gone() -> bool:
        return False

    c.session.flush_output = gone
    store.fetches.clear()
    await c.cmd("f FETCH 1:* (UID FLAGS)")
    assert len(store.fetches) == 1


async def test_search_in_chunks(store: CountingStore, monkeypatch) -> None:
    monkeypatch.setattr(sessmod, "CHUNK_ROWS", 10)
    c = Client(store)
    await c.cmd("a LOGIN alice secret")
    await c.cmd("s SELECT INBOX")
    store.fetches.clear()
    out = await c.cmd('x SEARCH OR SUBJECT m3 SUBJECT m24')
    assert "* SEARCH 4 25\r\n" in out
    assert [n for n, _ in store.fetches] == [10, 10, 5]


async def test_pipelined_single_message_fetches_share_one_query(store: CountingStore) -> None:
    """mbsync's pattern: one UID FETCH per message, pipelined; rows load together."""
    c = Client(store)
    await c.cmd("a LOGIN alice secret")
    await c.cmd("s SELECT INBOX")
    store.fetches.clear()
    burst = b"".join(b"f%d UID FETCH %d (BODY.PEEK[])\r\n" % (u, u) for u in range(1, 21))
    out = (await c.send(burst + b"g UID FETCH 21 (FLAGS BODY.PEEK[])\r\n")).decode()
    # 20 read-ahead commands in one query, the FLAGS one alone; between them the walk's
    # next block (21-25) started loading, dropped by the FETCH of another shape
    assert [n for n, _ in store.fetches] == [20, 5, 1], store.fetches
    for u in range(1, 21):
        assert f"* {u} FETCH (BODY[] {{" in out and f" UID {u})\r\nf{u} OK" in out
    assert "m19" in out and "FLAGS" in out.split("f20 OK")[1]
    # the read-ahead rows do not outlive the burst: a later FETCH queries again
    store.fetches.clear()
    await c.cmd("n NOOP")
    out = await c.cmd("h UID FETCH 3 (BODY.PEEK[])")
    assert len(store.fetches) == 1 and "m2" in out
    # a FETCH that sets \Seen, or asks for FLAGS, never reads ahead
    store.fetches.clear()
    await c.send(b"i UID FETCH 4 (BODY[])\r\nj UID FETCH 5 (BODY[])\r\n")
    assert len(store.fetches) == 2


async def test_a_client_walking_the_mailbox_is_read_ahead_of(store: CountingStore) -> None:
    """One UID FETCH per message, each sent only after the previous reply: from the
    second one on, the next messages load with it (bounded by CHUNK_BYTES)."""
    c = Client(store)
    await c.cmd("a LOGIN alice secret")
    await c.cmd("s SELECT INBOX")
    store.fetches.clear()
    bodies = []
    for u in range(1, 26):
        out = await c.cmd(f"f{u} UID FETCH {u} (BODY.PEEK[])")
        assert f"f{u} OK" in out
        bodies.append(out.split("\r\n")[1])
    assert bodies == [f"Subject: m{u - 1}" for u in range(1, 26)]
    assert len(store.fetches) <= 3, store.fetches  # 1, then 2-25 (66 KB apart from #8)
    # going backwards is not a walk: no read-ahead, one query each
    store.fetches.clear()
    await c.cmd("g UID FETCH 5 (BODY.PEEK[])")
    await c.cmd("h UID FETCH 4 (BODY.PEEK[])")
    assert [n for n, _ in store.fetches] == [1, 1]


async def test_search_loads_only_the_rows_its_sets_name(store: CountingStore) -> None:
    c = Client(store)
    await c.cmd("a LOGIN alice secret")
    await c.cmd("s SELECT INBOX")
    await c.cmd("f STORE 3 +FLAGS (\\Seen)")
    store.fetches.clear()
    out = await c.cmd("a UID SEARCH UID 2:4,20:*")
    assert "* SEARCH 2 3 4 20 21 22 23 24 25\r\n" in out
    assert store.fetches == []  # numbers only: answered from the view
    out = await c.cmd("b SEARCH 2:4 SEEN")
    assert "* SEARCH 3\r\n" in out
    assert [n for n, _ in store.fetches] == [3]  # the three rows of 2:4, not 25
    store.fetches.clear()
    out = await c.cmd("c SEARCH OR 1 UID 25 NOT 2:24")
    assert "* SEARCH 1 25\r\n" in out and store.fetches == []


async def test_a_walk_never_waits_for_the_next_block(monkeypatch) -> None:
    """The block after the one being answered loads while the client is answered: every
    query but the first two starts before the client asks for its messages; at most two
    blocks are held; another command drops the block still loading."""
    monkeypatch.setattr(sessmod, "READ_AHEAD", 8)
    store = FakeStore()
    for i in range(60):
        store.deliver("INBOX", b"Subject: w%d\r\n\r\nbody\r\n" % i)
    asked: list[tuple[int, int]] = []  # (first UID loaded, UID the client was at)
    at = 0
    real = store.fetch_upto

    async def counting(mailbox_id, uids, max_bytes, **kw):
        asked.append((min(uids), at))
        return await real(mailbox_id, uids, max_bytes, **kw)

    monkeypatch.setattr(store, "fetch_upto", counting)
    c = Client(store)
    await c.cmd("a LOGIN alice secret")
    await c.cmd("s SELECT INBOX")
    for u in range(1, 61):
        at = u
        out = await c.cmd(f"f{u} UID FETCH {u} (BODY.PEEK[])")
        assert f"* {u} FETCH (BODY[] {{" in out and f"Subject: w{u - 1}\r\n" in out
        held = len(c.session._ahead) + (8 if c.session._next is not None else 0)
        assert held <= 2 * 8
    assert len(asked) >= 60 // 8
    assert all(first > client for first, client in asked[2:]), asked
    await c.cmd("f61 UID FETCH 1 (BODY.PEEK[])")  # backwards: not a walk
    await c.cmd("n NOOP")
    assert c.session._next is None and c.session._ahead == {}
