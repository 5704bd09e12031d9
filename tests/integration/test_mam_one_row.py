"""The one-row archive (issue 17): a chat message is one row of xmpp_mam read from both
participants' views; paging, with= and purge per side, on the real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.xmpp_doubles import MemoryMamStore
from xmpp.features import rsm
from xmpp.features.mam import COUNT_EXACT, Filters, MamStore

A, B, C = "a@cx.example", "b@cx.example", "c@cx.example"


def chat(i: int, frm: str, to: str) -> tuple[str, str, str, str, str]:
    """A message archived by both sides: owner = sender, peer = recipient."""
    return (frm, f"id{i:03}", to, f"<message id='m{i}'><body>{i}</body></message>", to)


async def _conversation(store: Any) -> None:
    # 0..9: A<->B alternating, 10..13: C->A, 14: A's note to self (one-sided)
    await store.write([chat(i, A, B) if i % 2 else chat(i, B, A) for i in range(10)]
                      + [chat(i, C, A) for i in range(10, 14)]
                      + [(A, "id014", A, "<message><body>14</body></message>", None)])


def ids(rows: list[Any]) -> list[str]:
    return [r.stanza_id for r in rows]


@pytest.fixture(params=["postgresql", "memory"])
async def store(request: Any, services: Any) -> Any:
    """The PostgreSQL store, and the in-memory one held to the same behaviour."""
    return MamStore(services.db.pool) if request.param == "postgresql" else MemoryMamStore()


async def test_both_views_page_one_row(store: Any) -> None:
    await _conversation(store)
    every = [f"id{i:03}" for i in range(15)]
    rows, complete, total = await store.query(A, Filters(), rsm.Request(5))
    assert ids(rows) == every[:5] and not complete and total == 15
    rows, complete, total = await store.query(A, Filters(), rsm.Request(5, after="id004"))
    assert ids(rows) == every[5:10] and not complete and total == 15
    rows, complete, _ = await store.query(A, Filters(), rsm.Request(5, before=""))
    assert ids(rows) == every[10:] and not complete
    rows, complete, total = await store.query(B, Filters(), rsm.Request(4, before="id006"))
    assert ids(rows) == every[2:6] and not complete and total == 10
    rows, complete, total = await store.query(B, Filters(), rsm.Request(50))
    assert ids(rows) == every[:10] and complete and total == 10
    # with= both ways: A's with B, B's with A are the same ten rows
    for owner, other in ((A, B), (B, A)):
        rows, _, total = await store.query(owner, Filters(with_=other), rsm.Request(3, after="id002"))
        assert ids(rows) == every[3:6] and total == 10
    rows, _, total = await store.query(A, Filters(with_=C), rsm.Request(50))
    assert ids(rows) == every[10:14] and total == 4
    rows, _, total = await store.query(C, Filters(with_=A, after_id="id011"), rsm.Request(1))
    assert ids(rows) == ["id012"] and total == 2
    assert (await store.query(A, Filters(with_=A), rsm.Request(9)))[0][0].stanza_id == "id014"
    # an id of someone else's view is not in mine
    with pytest.raises(Exception, match="No such archive id"):
        await store.query(B, Filters(), rsm.Request(5, after="id010"))


async def test_purge_leaves_the_other_view(store: Any) -> None:
    await _conversation(store)
    await store.purge(A)
    assert (await store.query(A, Filters(), rsm.Request(50)))[0] == []
    rows, _, total = await store.query(B, Filters(with_=A), rsm.Request(50))
    assert ids(rows) == [f"id{i:03}" for i in range(10)] and total == 10
    rows, _, _ = await store.query(C, Filters(), rsm.Request(50))
    assert ids(rows) == [f"id{i:03}" for i in range(10, 14)]
    await store.purge(B)
    await store.purge(C)
    if isinstance(store, MamStore):  # rows in nobody's view are gone
        async with store.pool.acquire() as conn:
            assert await conn.fetchval("select count(*) from xmpp_mam") == 0
    # a repeated write of a shared row stays one row in each view
    await store.write([chat(99, A, B)])
    await store.write([chat(99, A, B), chat(100, B, A)])
    assert ids((await store.query(B, Filters(), rsm.Request(9)))[0]) == ["id099", "id100"]


async def test_purge_before_keeps_newer(store: Any) -> None:
    await _conversation(store)
    await store.purge(B, before=datetime.now(UTC) + timedelta(seconds=5))
    await store.write([chat(20, A, B)])
    assert ids((await store.query(B, Filters(), rsm.Request(9)))[0]) == ["id020"]
    assert len((await store.query(A, Filters(), rsm.Request(99)))[0]) == 16


async def test_count_exact_then_cached(services: Any) -> None:
    """Count is exact up to COUNT_EXACT rows a side, then a full count cached per owner
    and filter, kept exact for this process's writes and dropped by a purge."""
    store = MamStore(services.db.pool)
    n = 2 * COUNT_EXACT + 20  # each side over the bound
    await store.write([chat(i, A, B) if i % 2 else chat(i, B, A) for i in range(n)])
    page = rsm.Request(5, after="id001")
    assert (await store.query(A, Filters(), page))[2] == n
    assert (await store.query(A, Filters(with_=C), rsm.Request(5)))[2] == 0
    await store.write([chat(5000, A, B), chat(5001, B, A), chat(5002, C, A)])
    assert (await store.query(A, Filters(), page))[2] == n + 3  # local writes counted
    assert (await store.query(B, Filters(with_=A), page))[2] == n + 2
    async with services.db.pool.acquire() as conn:  # another node's write, unseen
        await conn.execute("insert into xmpp_mam(owner, stanza_id, with_jid, stanza, peer,"
                           " peer_shown) values ($1, 'x1', $2, '<message/>', $2, true)", B, A)
    assert (await store.query(A, Filters(), page))[2] == n + 3  # cached: an estimate
    _, _, small = await store.query(A, Filters(with_=B, after_id=f"id{n - 10:03}"),
                                    rsm.Request(5, after=f"id{n - 8:03}"))
    assert small == 9 + 2 + 1  # under the bound: exact (5000, 5001 and the other node's)
    await store.purge(A, before=datetime.now(UTC) - timedelta(days=1))  # nothing that old
    assert (await store.query(A, Filters(), page))[2] == n + 4  # recounted after a purge


async def test_migration_keeps_old_two_row_archives(services: Any) -> None:
    """0030 converts the old schema (a row per archive) into one-sided rows: every id a
    client holds stays valid and both views read as before."""
    from contextlib import asynccontextmanager
    from importlib.resources import files

    sql = files("xmpp") / "migrations"
    async with services.db.pool.acquire() as conn, conn.transaction():
        await conn.execute("create schema old_mam; set local search_path to old_mam")
        await conn.execute((sql / "0003_mam.sql").read_text())
        await conn.execute(
            "insert into xmpp_mam(owner, stanza_id, with_jid, stanza) values"
            f" ('{B}', 'r1', '{A}', '<message><body>1</body></message>'),"
            f" ('{A}', 's1', '{B}', '<message><body>1</body></message>'),"
            f" ('{A}', 'r2', '{B}', '<message><body>2</body></message>'),"
            f" ('{B}', 's2', '{A}', '<message><body>2</body></message>')")
        await conn.execute((sql / "0030_mam_one_row.sql").read_text())

        class OneConnection:  # the store's pool interface over this transaction
            @asynccontextmanager
            async def acquire(self) -> Any:
                yield conn

        store = MamStore(OneConnection())
        rows, _, total = await store.query(A, Filters(with_=B), rsm.Request(9, after="s1"))
        assert ids(rows) == ["r2"] and total == 2
        assert ids((await store.query(B, Filters(), rsm.Request(9)))[0]) == ["r1", "s2"]
        await store.write([chat(3, A, B)])
        assert ids((await store.query(B, Filters(with_=A), rsm.Request(9)))[0]) == \
            ["r1", "s2", "id003"]
        await store.purge(A)
        assert ids((await store.query(B, Filters(), rsm.Request(9)))[0]) == ["r1", "s2", "id003"]
        await conn.execute("drop schema old_mam cascade")
