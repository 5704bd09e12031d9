"""Upload slots and files' metadata (table ``xmpp_upload`` of ``0004_pep_upload.sql``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Slot:
    token: str
    owner: str
    filename: str
    size: int
    content_type: str
    put_secret: str
    created: datetime
    uploaded: datetime | None


class UploadStore:
    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def used(self, owner: str) -> int:
        """Bytes held by `owner`: uploaded files and open slots."""
        async with self.pool.acquire() as conn:
            return int(await conn.fetchval(
                "select coalesce(sum(size), 0) from xmpp_upload where owner = $1", owner))

    async def add(self, token: str, owner: str, filename: str, size: int, content_type: str,
                  put_secret: str, quota: int) -> bool:
        """Open a slot unless it would take `owner` over `quota` bytes."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("select pg_advisory_xact_lock(hashtext('upload:' || $1))", owner)
            used = int(await conn.fetchval(
                "select coalesce(sum(size), 0) from xmpp_upload where owner = $1", owner))
            if used + size > quota:
                return False
            await conn.execute(
                """insert into xmpp_upload(token, owner, filename, size, content_type, put_secret)
                   values ($1, $2, $3, $4, $5, $6)""",
                token, owner, filename, size, content_type, put_secret)
        return True

    async def slot(self, token: str) -> Slot | None:
        async with self.pool.acquire() as conn:
            r = await conn.fetchrow("select * from xmpp_upload where token = $1", token)
        if r is None:
            return None
        return Slot(r["token"], r["owner"], r["filename"], r["size"], r["content_type"],
                    r["put_secret"], r["created"], r["uploaded"])

    async def mark_uploaded(self, token: str) -> bool:
        async with self.pool.acquire() as conn:
            done = await conn.execute(
                "update xmpp_upload set uploaded = now() where token = $1 and uploaded is null",
                token)
        return not done.endswith(" 0")

    async def expire(self, unused_before: datetime, files_before: datetime) -> list[str]:
        """Delete slots never used since `unused_before` and files older than
        `files_before`; returns their tokens."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """delete from xmpp_upload where (uploaded is null and created < $1)
                   or created < $2 returning token""", unused_before, files_before)
        return [r["token"] for r in rows]
