"""XMPP through a PostgreSQL outage (issue 13 item 4): offline messages are stored once
the database is back or refused with resource-constraint (the sender's count matches),
and archive rows are complete after an outage shorter than the budget."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.faultutil import running_server, wait_for
from tests.integration.test_xmpp import DOMAIN, PASSWORD, Client
from tests.pgfault import RestartablePostgres

Z, L = f"zhang.san@{DOMAIN}", f"li.si@{DOMAIN}"
_n = itertools.count()


@pytest.fixture(scope="module")
def rpg() -> Iterator[RestartablePostgres]:
    pg = RestartablePostgres()
    try:
        yield pg
    finally:
        pg.close()


async def _server(rpg: RestartablePostgres, tmp: Path, **xmpp: Any) -> Any:
    url = await rpg.create_database(f"xo{next(_n)}")
    server = await running_server(url, tmp / "state", xmpp=xmpp)
    d = server.services.directory
    await d.add_unit("finance", "财政局")
    await d.add_user("zhang.san", "finance", "张三", password=PASSWORD)
    await d.add_user("li.si", "finance", "李四", password=PASSWORD)
    xmpp_c = server.services.components["xmpp"]
    assert await wait_for(lambda: xmpp_c.host.directory.exists(L), 10)
    return server


async def _outage(rpg: RestartablePostgres, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, rpg.stop, "fast")
    try:
        await asyncio.sleep(seconds)
    finally:
        await loop.run_in_executor(None, rpg.start)


def _errors(c: Client) -> list[Any]:
    out = []
    while not c.messages.empty():
        m = c.messages.get_nowait()
        if m["type"] == "error":
            out.append(m)
    return out


async def test_offline_messages_survive_a_short_outage(rpg, tmp_path):
    server = await _server(rpg, tmp_path)
    z = await Client(Z).login(server.ports["xmpp"])
    pool = server.services.db.pool
    try:
        outage = asyncio.get_running_loop().create_task(_outage(rpg, 2.0))
        await asyncio.sleep(0.3)  # the database is down now
        for i in range(20):
            z.send_message(mto=L, mbody=f"while down {i}", mtype="chat")
        await outage

        async def stored() -> bool:
            try:
                return await pool.fetchval("select count(*) from xmpp_offline") == 20
            except Exception:  # noqa: BLE001 - the pool reconnects
                return False

        assert await wait_for(stored, 30)
        assert _errors(z) == []
    finally:
        await z.close()
        await server.stop()
        await server.services.db.close()


async def test_offline_messages_refused_with_an_error_past_the_budget(rpg, tmp_path):
    server = await _server(rpg, tmp_path, outage_retry_seconds=0.5)
    z = await Client(Z).login(server.ports["xmpp"])
    try:
        outage = asyncio.get_running_loop().create_task(_outage(rpg, 4.0))
        await asyncio.sleep(0.3)
        for i in range(10):
            z.send_message(mto=L, mbody=f"too long {i}", mtype="chat")
        errors: list[Any] = []

        def ten_errors() -> bool:
            errors.extend(_errors(z))
            return len(errors) >= 10

        assert await wait_for(ten_errors, 15)
        await outage
        assert {e["error"]["condition"] for e in errors} == {"resource-constraint"}
        assert {e["error"]["type"] for e in errors} == {"wait"}
        pool = server.services.db.pool
        assert await wait_for(lambda: pool.fetchval("select 1"), 10)
        assert await pool.fetchval("select count(*) from xmpp_offline") == 0  # 10 + 0 = sent
    finally:
        await z.close()
        await server.stop()
        await server.services.db.close()


async def test_archive_is_complete_after_a_short_outage(rpg, tmp_path):
    server = await _server(rpg, tmp_path)
    z = await Client(Z).login(server.ports["xmpp"])
    li = await Client(L).login(server.ports["xmpp"])
    pool = server.services.db.pool
    try:
        outage = asyncio.get_running_loop().create_task(_outage(rpg, 2.0))
        await asyncio.sleep(0.3)
        for i in range(15):
            z.send_message(mto=L, mbody=f"live {i}", mtype="chat")
        for _ in range(15):
            await li.next_message()  # delivered live while the database is away
        await outage

        async def archived() -> bool:
            try:
                return await pool.fetchval("select count(*) from xmpp_mam") == 30
            except Exception:  # noqa: BLE001
                return False

        assert await wait_for(archived, 30)  # both archives, every message
    finally:
        await z.close()
        await li.close()
        await server.stop()
        await server.services.db.close()
