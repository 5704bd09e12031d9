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


async def test_lease_changes_only_by_owner_and_dead_nodes_are_reaped(services):
    """finish/defer act only while the row is leased to the caller; the node reaper hands
    back rows of owners that are not live nodes, never those of a live one."""
    from directory import nodes_repo
    from mailrelay.submit import new_queue_id
    async with services.db.pool.acquire() as conn, conn.transaction():
        await repo.enqueue(conn, [new_queue_id(), new_queue_id()], [repo.NewMessage(
            b"Subject: x\r\n\r\nx\r\n", None,
            [("a@x.example", "b@y.example", None, "y.example", "remote", None, None, None)])] * 2)
    async with services.db.pool.acquire() as conn:
        await nodes_repo.register(conn, "live-node", "h", 1)
        (mine,) = await repo.claim(conn, "live-node", 1, 60)
        (ghost,) = await repo.claim(conn, "ghost-node", 1, 60)  # no node row: dead
        assert await repo.finish(conn, [mine], "delivered", ["x"], owner="someone-else") == []
        assert not await repo.defer(conn, mine, 1, "x", owner="someone-else")
        assert await repo.reclaim_expired(conn, 5) == 1  # the ghost's row only
        assert await conn.fetchval("select state from queue where id = $1", ghost.id) == "ready"
        assert await repo.renew(conn, "live-node", [mine.id, ghost.id], 60) == {mine.id}
        await conn.execute("update nodes set heartbeat = now() - interval '1 minute'")
        assert await nodes_repo.dead(conn, 5) == ["live-node"]
        assert await repo.reclaim_expired(conn, 5) == 1  # its node stopped beating
        assert await repo.finish(conn, [mine], "delivered", ["x"], owner="live-node") == []


async def test_claim_takes_only_what_free_destination_slots_can_start(services):
    """per_destination 2: with one delivery to y.example running, one more message's rows
    are claimed (both of its recipients), none of the other messages'; z.example is free."""
    from mailrelay.submit import new_queue_id
    def msg(domain: str, n: int = 1) -> repo.NewMessage:
        return repo.NewMessage(b"Subject: x\r\n\r\nx\r\n", None, [
            ("a@x.example", f"r{i}@{domain}", None, domain, "remote", None, None, None)
            for i in range(n)])
    async with services.db.pool.acquire() as conn, conn.transaction():
        await repo.enqueue(conn, [new_queue_id() for _ in range(4)],
                           [msg("y.example", 2), msg("y.example"), msg("y.example"),
                            msg("z.example")])
    async with services.db.pool.acquire() as conn:
        got = await repo.claim(conn, "n1", 100, 60, in_use={"y.example": 1}, per_destination=2)
        by_domain: dict[str, set[int]] = {}
        for r in got:
            by_domain.setdefault(r.domain, set()).add(r.message_id)
        assert len(by_domain["y.example"]) == 1 and len(by_domain["z.example"]) == 1
        assert len([r for r in got if r.domain == "y.example"]) == 2  # the first message's two
        assert await repo.claim(conn, "n1", 100, 60, in_use={"y.example": 2},
                                per_destination=2) == []
        more = await repo.claim(conn, "n1", 100, 60, per_destination=2)
        assert len({r.message_id for r in more}) == 2  # the other two y.example messages
