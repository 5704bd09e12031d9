"""Helpers for mail integration tests: a small city, mailbox polling, raw SMTP dialogue."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

PASSWORD = "Str0ng-pass!"


async def seed_city(server: Any) -> None:
    d = server.services.directory
    await d.add_unit("finance", "市财政局")
    await d.add_unit("stats", "市统计局")
    await d.add_user("zhang.san", "finance", "张三", password=PASSWORD)
    await d.add_user("li.si", "finance", "李四", password=PASSWORD)
    await d.add_user("wang.wu", "stats", "王五", roles=["clerk"], password=PASSWORD)
    await d.add_alias("director", "zhang.san")
    await server.services.components["mail"].parts.book.reload()


async def inbox(server: Any, address: str, mailbox: str = "INBOX") -> list[bytes]:
    """Raw messages in a mailbox, in UID order."""
    async with server.services.db.pool.acquire() as conn:
        rows = await conn.fetch(
            "select m.raw from mailbox_messages mm join mailboxes b on b.id = mm.mailbox_id"
            " join accounts a on a.id = b.account_id join messages m on m.id = mm.message_id"
            " where a.address = $1 and b.name = $2 order by mm.uid", address, mailbox)
    return [bytes(r["raw"]) for r in rows]


async def wait_inbox(server: Any, address: str, count: int, timeout: float = 10.0) -> list[bytes]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        msgs = await inbox(server, address)
        if len(msgs) >= count or asyncio.get_running_loop().time() > deadline:
            return msgs
        await asyncio.sleep(0.02)


async def queue_empty(server: Any, timeout: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        async with server.services.db.pool.acquire() as conn:
            if not await conn.fetchval("select count(*) from queue"):
                return True
        await asyncio.sleep(0.05)
    return False


def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class RawSMTP:
    """A line-level SMTP client for dialogues that libraries refuse to send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w = reader, writer

    @classmethod
    async def connect(cls, port: int, tls: bool = False) -> RawSMTP:
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls() if tls else None)
        c = cls(r, w)
        await c.reply()
        return c

    async def reply(self) -> str:
        lines = []
        while True:
            line = (await asyncio.wait_for(self.r.readline(), 10)).decode()
            lines.append(line.rstrip("\r\n"))
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    async def cmd(self, line: str | bytes) -> str:
        self.w.write(line if isinstance(line, bytes) else line.encode() + b"\r\n")
        await self.w.drain()
        return await self.reply()

    async def starttls(self) -> None:
        assert (await self.cmd("STARTTLS")).startswith("220")
        await self.w.start_tls(client_tls())

    async def close(self) -> None:
        self.w.close()
