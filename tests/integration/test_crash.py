"""Nothing lost: kill -9 the server after the 250, while its delivery attempt holds the
queue row's lease; a new process takes the row over once the dead node's heartbeat ages
and delivers it exactly once.

(Before issue 13 this test killed the server while the row waited for a retry, not
leased, so it could not catch a lease that never came back.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from tests.integration.faultutil import Serve, Sink, send, wait_for, write_config
from tests.netutil import free_port


async def test_kill_while_leased_loses_nothing_and_sends_once(db_url, tmp_path: Path):
    upstream = free_port()
    loop = asyncio.get_running_loop()
    held: list[asyncio.StreamWriter] = []

    async def black_hole(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)  # accept and never greet: the delivery attempt waits, leased

    hole = await asyncio.start_server(black_hole, "127.0.0.1", upstream)
    cfg = write_config(tmp_path / "cx.toml", db_url, smarthost_port=upstream, lease=300)
    first = Serve(cfg)
    await loop.run_in_executor(None, first.start)
    conn = await asyncpg.connect(db_url)
    try:
        assert await send(first.ports["smtp"], "survive")
        node = await conn.fetchval("select id from nodes where pid = $1", first.pid)

        async def leased() -> bool:
            return bool(await conn.fetchval(
                "select count(*) from queue where state = 'active' and lease_owner = $1", node))

        assert await wait_for(leased, 20)
        first.kill()  # mid-attempt: the row is leased to a node that no longer exists
        assert await leased()  # the lease (300 s) is still running
        hole.close()
        for w in held:
            w.close()
        await hole.wait_closed()
        sink = await Sink().start(upstream)
        second = Serve(cfg)
        await loop.run_in_executor(None, second.start)
        try:
            # taken over when the dead node's heartbeat is older than node.dead_seconds
            # (3 s here), long before its 300 s lease would run out
            assert await wait_for(lambda: sink.counts["survive"] >= 1, 30)
            assert await wait_for(lambda: conn.fetchval("select count(*) = 0 from queue"), 10)
            await asyncio.sleep(1.5)  # a duplicate would arrive within a retry interval
        finally:
            await loop.run_in_executor(None, second.stop)
            sink.close()
        assert sink.counts["survive"] == 1
        assert await conn.fetchval(
            "select count(*) from deliveries where status = 'delivered'") == 1
        assert await conn.fetchval("select count(*) from nodes where id = $1", node) == 0
    finally:
        await conn.close()
        first.kill()
