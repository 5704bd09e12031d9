"""The pool's release hook (gateway.db._reset_connection): a clean connection goes back
without asyncpg's reset round trip, but one that may carry session state is reset, so
the next user never inherits an open transaction or a LISTEN."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from gateway.db import _Connection, _init_connection, _reset_connection

pytestmark = pytest.mark.integration


async def _pool(db_url: str) -> asyncpg.Pool:
    # one connection: every acquire gets the same backend, so its state is visible
    return await asyncpg.create_pool(db_url, min_size=1, max_size=1, init=_init_connection,
                                     reset=_reset_connection, connection_class=_Connection)


async def test_clean_release_sends_no_reset(db_url: str) -> None:
    pool = await _pool(db_url)
    try:
        async with pool.acquire() as c:
            pid = c.get_server_pid()
            # a session setting survives the release: no RESET ALL round trip was sent
            await c.execute("select set_config('application_name', 'probe', false)")
        async with pool.acquire() as c:
            assert c.get_server_pid() == pid
            assert await c.fetchval("show application_name") == "probe"
    finally:
        await pool.close()


async def test_open_transaction_is_rolled_back_on_release(db_url: str) -> None:
    pool = await _pool(db_url)
    try:
        async with pool.acquire() as c:
            await c.execute("create temporary table if not exists t_reset (x int)")
            tr = c.transaction()
            await tr.start()  # a holder that forgets to finish its transaction
            await c.execute("insert into t_reset values (1)")
        async with pool.acquire() as c:
            assert not c.is_in_transaction()
            assert await c.fetchval("select count(*) from t_reset") == 0
    finally:
        await pool.close()


async def test_listen_is_undone_on_release(db_url: str) -> None:
    pool = await _pool(db_url)
    got: list[str] = []
    try:
        async with pool.acquire() as c:
            await c.add_listener("reset_probe", lambda *a: got.append(a[3]))
        async with pool.acquire() as c:
            chans = await c.fetch("select pg_listening_channels()")
            assert chans == []
            await c.execute("notify reset_probe, 'x'")
            await asyncio.sleep(0.1)
        assert got == []
    finally:
        await pool.close()
