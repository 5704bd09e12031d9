"""The pool's release (gateway.db.PoolConnection): a plain connection goes back without
asyncpg's reset round trip; one that LISTENed or took a session lock is reset in full, and
an open transaction is still rolled back."""

from __future__ import annotations

import asyncpg
import pytest

from cxkernel.config import Config
from gateway.db import Database


async def _one_conn(cfg: Config) -> Database:
    return await Database.open(cfg, migrate_schema=False, pool_min=1, pool_max=1)


async def test_plain_release_sends_nothing(cfg: Config) -> None:
    db = await _one_conn(cfg)
    try:
        sent: list[str] = []
        async with db.pool.acquire() as conn:
            conn.add_query_logger(lambda rec: sent.append(rec.query))
            assert await conn.fetchval("select 1") == 1
        assert sent == ["select 1"]  # no "RESET ALL" round trip on release
    finally:
        await db.close()


@pytest.mark.filterwarnings("ignore:.*active notification listener")
async def test_listen_is_forgotten_on_release(cfg: Config) -> None:
    db = await _one_conn(cfg)
    try:
        async with db.pool.acquire() as conn:
            await conn.add_listener("cx_pool_test", lambda *a: None)
            await conn.execute("select pg_advisory_lock(4242)")
        async with db.pool.acquire() as conn:  # the same (only) connection
            assert await conn.fetchval("select count(*) from pg_listening_channels()") == 0
            assert await conn.fetchval(
                "select count(*) from pg_locks where locktype = 'advisory'"
                " and pid = pg_backend_pid()") == 0
    finally:
        await db.close()


async def test_migration_lock_marks_for_reset(cfg: Config) -> None:
    db = await _one_conn(cfg)
    try:
        async with db.pool.acquire() as conn:
            conn.needs_reset()
            await conn.execute("select pg_advisory_lock(4243)")  # as if the unlock failed
        async with db.pool.acquire() as conn:
            assert await conn.fetchval(
                "select count(*) from pg_locks where locktype = 'advisory'"
                " and pid = pg_backend_pid()") == 0
    finally:
        await db.close()


async def test_open_transaction_is_rolled_back(cfg: Config) -> None:
    db = await _one_conn(cfg)
    try:
        conn = await db.pool.acquire()
        await conn.execute("create table if not exists cx_pool_t (x int)")
        await conn.execute("begin")
        await conn.execute("insert into cx_pool_t values (1)")
        await db.pool.release(conn)
        async with db.pool.acquire() as conn2:
            assert await conn2.fetchval("select count(*) from cx_pool_t") == 0
            assert not conn2.is_in_transaction()
    finally:
        await db.close()


def test_pool_connection_is_an_asyncpg_connection() -> None:
    from gateway.db import PoolConnection
    assert issubclass(PoolConnection, asyncpg.Connection)
