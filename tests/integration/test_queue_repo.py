"""Queue repository details: delivery history retention, claims with leases."""

from __future__ import annotations

from mailrelay.queue import repo


async def test_history_older_than_retention_is_forgotten(services):
    async with services.db.pool.acquire() as conn:
        await conn.execute(
            "insert into deliveries(queue_id, message_id, sender, recipient, status, at) values"
            " ('OLD', 1, 'a@x', 'b@y', 'delivered', now() - interval '40 days'),"
            " ('NEW', 2, 'a@x', 'b@y', 'delivered', now() - interval '1 day')")
        assert await repo.expire_history(conn, 30) == 1
        assert [r["queue_id"] for r in await conn.fetch("select queue_id from deliveries")] == ["NEW"]
        assert await repo.message_raw(conn, 999999) == b""  # a collected body reads as empty


async def test_expired_lease_returns_to_ready(services):
    from mailrelay.submit import new_queue_id
    async with services.db.pool.acquire() as conn, conn.transaction():
        await repo.enqueue(conn, [new_queue_id()], [repo.NewMessage(
            b"Subject: x\r\n\r\nx\r\n", None,
            [("a@x.example", "b@y.example", None, "y.example", "remote", None, None, None)])])
    async with services.db.pool.acquire() as conn:
        (row,) = await repo.claim(conn, "dead-owner", 10, 5)
        assert row.state == "active" and row.attempts == 1
        assert await repo.claim(conn, "other", 10, 5) == []  # claimed rows are skipped
        await conn.execute("update queue set lease_until = now() - interval '1 second'")
        assert await repo.reclaim_expired(conn) == 1
        (again,) = await repo.claim(conn, "other", 10, 5)
        assert again.id == row.id and again.attempts == 2


async def test_archive_write_copy_then_duplicate_fallback(services):
    """The archive writes with COPY; a batch repeating an archived row falls back to
    INSERT ... ON CONFLICT DO NOTHING: the new rows land, the repeat is not doubled."""
    from xmpp.features.mam import MamStore
    store = MamStore(services.db.pool)
    row = ("a@cx.example", "id-1", "b@cx.example", "<message/>")
    await store.write([row])
    await store.write([row, ("a@cx.example", "id-2", "b@cx.example", "<message/>")])
    async with services.db.pool.acquire() as conn:
        ids = [r["stanza_id"] for r in await conn.fetch(
            "select stanza_id from xmpp_mam order by id")]
    assert ids == ["id-1", "id-2"]
