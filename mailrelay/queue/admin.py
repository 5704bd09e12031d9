"""Queue administration for the CLI (mox `queue list/hold/...`): list, show, retry, hold,
release, delete, stats. Each function is one small transaction; the CLI renders."""

from __future__ import annotations

from typing import Any

import asyncpg

from cxkernel.errors import NotFound
from mailrelay.queue import repo


async def _rows(pool: asyncpg.Pool, ident: str) -> list[repo.QueueRow]:
    async with pool.acquire() as conn:
        rows = await repo.rows_for(conn, ident)
    if not rows:
        raise NotFound(f"no queue entry {ident}")
    return rows


async def list_entries(pool: asyncpg.Pool, state: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        return [r.as_dict() for r in await repo.list_queue(conn, state, limit)]


async def show(pool: asyncpg.Pool, ident: str) -> dict[str, Any]:
    """Pending rows plus finished outcomes of a queue id (or one row id), with headers."""
    async with pool.acquire() as conn:
        rows = await repo.rows_for(conn, ident)
        qid = rows[0].queue_id if rows else ident.upper()
        done = await repo.deliveries_for(conn, qid)
        if not rows and not done:
            raise NotFound(f"no queue entry {ident}")
        mid = rows[0].message_id if rows else await conn.fetchval(
            "select message_id from deliveries where queue_id = $1 limit 1", qid)
        raw = await repo.message_raw(conn, mid)
    end = raw.find(b"\r\n\r\n")
    return {"queue_id": qid, "pending": [r.as_dict() for r in rows], "finished": done,
            "size": len(raw), "headers": raw[:end if end >= 0 else len(raw)].decode("utf-8", "replace")}


async def _transition(pool: asyncpg.Pool, ident: str, state: str, from_states: list[str]) -> int:
    rows = await _rows(pool, ident)
    async with pool.acquire() as conn:
        return await repo.set_state(conn, [r.id for r in rows], state, from_states=from_states)


async def retry(pool: asyncpg.Pool, ident: str) -> int:
    """Try now (ready or held entries)."""
    n = await _transition(pool, ident, "ready", ["ready", "held"])
    async with pool.acquire() as conn:
        await conn.execute("select pg_notify('queue_ready', '')")
    return n


async def retry_all(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        res = await conn.execute("update queue set next_attempt = now() where state = 'ready'")
        await conn.execute("select pg_notify('queue_ready', '')")
    return int(res.split()[-1])


async def hold(pool: asyncpg.Pool, ident: str) -> int:
    return await _transition(pool, ident, "held", ["ready"])


async def release(pool: asyncpg.Pool, ident: str) -> int:
    n = await _transition(pool, ident, "ready", ["held"])
    async with pool.acquire() as conn:
        await conn.execute("select pg_notify('queue_ready', '')")
    return n


async def delete(pool: asyncpg.Pool, ident: str) -> int:
    """Remove entries that are not being delivered right now (no DSN is sent)."""
    rows = [r for r in await _rows(pool, ident) if r.state != "active"]
    async with pool.acquire() as conn, conn.transaction():
        await repo.finish(conn, rows, "deleted", ["deleted by admin"] * len(rows))
    return len(rows)


async def stats(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        return await repo.stats(conn)
