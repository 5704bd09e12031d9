"""Faults under load (issue 13): a destination slower than the queue lease, a node killed
with SIGKILL, a PostgreSQL restarted and killed. Two `cxgw serve` processes share one
database; the sink counts what each sender saw acknowledged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.integration.faultutil import (
    LISTENERS,
    Serve,
    Sink,
    send,
    wait_for,
    write_config,
)
from tests.netutil import free_port
from tests.pgfault import RestartablePostgres


async def _queue(db_url: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(db_url)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


@pytest.fixture
async def two_nodes(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[Serve, Serve, Sink]]:
    delay = 6.0  # > lease (2 s) + node.dead_seconds (3 s): an unrenewed lease would be lost
    port = free_port()
    sink = await Sink(delay).start(port)
    loop = asyncio.get_running_loop()
    a = Serve(write_config(tmp_path / "a.toml", db_url, smarthost_port=port, lease=2))
    b = Serve(write_config(tmp_path / "b.toml", db_url, smarthost_port=port, lease=2))
    await loop.run_in_executor(None, a.start)
    await loop.run_in_executor(None, b.start)
    try:
        yield a, b, sink
    finally:
        await asyncio.gather(loop.run_in_executor(None, a.stop),
                             loop.run_in_executor(None, b.stop))
        sink.close()


async def test_slow_destination_is_sent_once_by_two_nodes(two_nodes, db_url):
    """The sink answers DATA after 6 s, longer than the 2 s lease; per_destination = 2 on
    each node, so rows also wait for a slot. Every message arrives exactly once: the lease
    is renewed while the delivery runs, and nothing is claimed before a slot is free."""
    a, b, sink = two_nodes
    subjects = [f"slow-{i}" for i in range(6)]
    acked = await asyncio.gather(*(send((a if i % 2 else b).ports["smtp"], s)
                                   for i, s in enumerate(subjects)))
    assert all(acked)
    assert await wait_for(lambda: _queue(db_url, "select count(*) = 0 from queue"), 90)
    await asyncio.sleep(2)  # a duplicate attempt in flight would land by now
    assert {s: sink.counts[s] for s in subjects} == {s: 1 for s in subjects}
    delivered = await _queue(db_url, "select count(*) from deliveries where status = 'delivered'")
    assert delivered == len(subjects)


async def test_a_killed_node_s_leases_are_taken_over(two_nodes, db_url):
    """Node A is SIGKILLed while it holds leased rows (its deliveries wait on the slow
    sink); node B takes them over once A's heartbeat is older than node.dead_seconds
    (3 s here), well inside 30 s, and every message is delivered."""
    a, b, sink = two_nodes
    subjects = [f"kill-{i}" for i in range(4)]
    assert all(await asyncio.gather(*(send(a.ports["smtp"], s) for s in subjects)))
    conn = await asyncpg.connect(db_url)
    try:
        a_node = await conn.fetchval("select id from nodes where pid = $1", a.pid)
        assert a_node is not None

        async def a_holds() -> bool:
            return bool(await conn.fetchval(
                "select count(*) from queue where state = 'active' and lease_owner = $1", a_node))

        assert await wait_for(a_holds, 20)
        a.kill()  # while A's rows are leased and its deliveries are in DATA
        leased_at_kill = await conn.fetchval(
            "select count(*) from queue where lease_owner = $1", a_node)
        assert leased_at_kill > 0

        async def taken_over() -> bool:
            return not await conn.fetchval(
                "select count(*) from queue where lease_owner = $1", a_node)

        assert await wait_for(taken_over, 30)
        assert await wait_for(lambda: conn.fetchval("select count(*) = 0 from queue"), 60)
        assert await conn.fetchval("select count(*) from nodes where id = $1", a_node) == 0
    finally:
        await conn.close()
    assert all(sink.counts[s] >= 1 for s in subjects)
    # A died before reading any 250 (the sink answers after 6 s), so the sink counted
    # nothing of A's attempts: B's attempts are the only deliveries.
    assert {s: sink.counts[s] for s in subjects} == {s: 1 for s in subjects}


# ---- a PostgreSQL that is restarted and killed ------------------------------------------
@pytest.fixture(scope="module")
def rpg() -> Iterator[RestartablePostgres]:
    pg = RestartablePostgres()
    try:
        yield pg
    finally:
        pg.close()


async def test_listeners_come_back_after_restart_and_kill(rpg, tmp_path):
    """After a clean restart and after a crash of PostgreSQL, the process's LISTEN
    connection is back (reconnect with backoff, 1 s at most between tries) and its
    catch-up ran: XMPP knows a user added afterwards (directory_changed), and remote mail
    queued by another process is sent at once (queue_ready; the queue's own poll is 30 s)."""
    from cxkernel.config import from_dict
    from gateway.app import RunningServer, open_services
    from mailrelay.queue import repo
    from mailrelay.submit import new_queue_id

    url = await rpg.create_database("listeners")
    port = free_port()
    sink = await Sink().start(port)
    cfg = from_dict({
        "server": {"domain": "cx.example", "state_dir": str(tmp_path / "state")},
        "database": {"url": url, "pool_min": 1, "pool_max": 10},
        # every other listener off (a fixed default port could be taken on this machine)
        "listen": {k: "127.0.0.1:0" if k in ("smtp", "imap", "xmpp", "http") else ""
                   for k in LISTENERS},
        "relay": {"smarthost": f"127.0.0.1:{port}"},
        "node": {"heartbeat_seconds": 0.5, "dead_seconds": 5},
    })
    services = await open_services(cfg)
    server = RunningServer(services)
    loop = asyncio.get_running_loop()
    try:
        await server.start()
        await services.directory.add_unit("finance", "市财政局")
        listen = services.listen
        xmpp = services.components["xmpp"]
        assert listen.listening and set(listen.subs) >= {
            "queue_ready", "directory_changed", "mailbox_changed"}
        for n, fault in enumerate((rpg.restart, lambda: (rpg.kill(), rpg.start()))):
            before = listen.reconnects
            await loop.run_in_executor(None, fault)
            assert await wait_for(lambda b=before: listen.reconnects > b and listen.listening, 15)
            # directory_changed after the fault: XMPP learns the new user (no poll exists)
            user = f"new.user{n}"
            await services.directory.add_user(user, "finance", "新用户")
            assert await wait_for(lambda u=user: xmpp.host.directory.exists(f"{u}@cx.example"), 10)
            # queue_ready: a row queued by "another process" (a separate connection)
            conn = await asyncpg.connect(url)
            try:
                async with conn.transaction():
                    await repo.enqueue(conn, [new_queue_id()], [repo.NewMessage(
                        f"Subject: after-{n}\r\n\r\nx\r\n".encode(), None,
                        [("a@cx.example", "b@remote.example", None, "remote.example", "remote",
                          None, None, None)])])
            finally:
                await conn.close()
            assert await wait_for(lambda k=n: sink.counts[f"after-{k}"] == 1, 10)
    finally:
        await server.stop()
        await services.db.close()
        sink.close()


async def test_outcome_recorded_after_a_restart_during_delivery(rpg, tmp_path):
    """PostgreSQL goes away while a delivery waits for the destination's 250 and is back
    only after it: the outcome is recorded once the database returns (retried, lease kept),
    so the message is not sent again when its lease would have run out."""
    from tests.integration.faultutil import running_server
    url = await rpg.create_database("outcome")
    port = free_port()
    sink = await Sink(3.0).start(port)
    server = await running_server(url, tmp_path / "state", relay={"smarthost": f"127.0.0.1:{port}"},
                                  queue={"lease_seconds": 2, "retry_initial": 1, "retry_max": 2},
                                  node={"heartbeat_seconds": 0.5, "dead_seconds": 3},
                                  smtp={"trusted_networks": ["127.0.0.0/8"]})
    loop = asyncio.get_running_loop()
    try:
        assert await send(server.ports["smtp"], "once")
        assert await wait_for(lambda: _queue(url, "select count(*) = 1 from queue"
                                                  " where state = 'active'"), 10)
        await loop.run_in_executor(None, rpg.stop, "fast")
        await asyncio.sleep(4.0)  # the sink answered (at 3 s) while the database was away
        await loop.run_in_executor(None, rpg.start)
        assert await wait_for(lambda: sink.counts["once"] == 1, 10)

        async def drained() -> bool:
            try:
                return bool(await _queue(url, "select count(*) = 0 from queue"))
            except (OSError, asyncpg.PostgresError):
                return False

        assert await wait_for(drained, 20)
        await asyncio.sleep(6)  # lease (2 s) + dead_seconds (3 s): a second attempt by now
        assert sink.counts["once"] == 1
    finally:
        await server.stop()
        await server.services.db.close()
        sink.close()
