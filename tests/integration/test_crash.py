"""Nothing lost: kill -9 the server after the 250 and before delivery; after a restart the
message is delivered exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

import aiosmtplib
import asyncpg
from aiosmtpd.smtp import SMTP as SinkSMTP

from tests.integration.mailutil import PASSWORD, client_tls
from tests.integration.test_serve import start_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CountingSink:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.original_content)
        return "250 2.0.0 ok"


async def test_kill_between_250_and_delivery_loses_nothing(db_url, tmp_path: Path):
    upstream = free_port()
    cfg = tmp_path / "cx.toml"
    listen = "\n".join(f'{k} = "127.0.0.1:0"' for k in
                       ("smtp", "submission", "submissions", "imap", "imaps", "xmpp", "xmpps", "http",
                        "https"))
    cfg.write_text(f'[server]\nstate_dir = "{tmp_path / "var"}"\n[database]\nurl = "{db_url}"\n'
                   f'[listen]\n{listen}\n[relay]\nsmarthost = "127.0.0.1:{upstream}"\n'
                   '[queue]\nretry_initial = 1\nretry_max = 1\n')
    env = {"CXGW_CONFIG": "", "CXGW_DATABASE_URL": ""}
    loop = asyncio.get_running_loop()
    proc, ports, _ = await loop.run_in_executor(None, start_server, cfg, env)
    try:
        from cxkernel.config import load
        from gateway.app import open_services
        services = await open_services(load(str(cfg), env={}))
        await services.directory.add_unit("finance", "市财政局")
        await services.directory.add_user("zhang.san", "finance", "张三", password=PASSWORD)
        await services.db.close()
        await asyncio.sleep(0.3)  # the server reloads its address book on directory_changed
        msg = (b"From: zhang.san@cx.example\r\nTo: out@remote.example\r\nSubject: survive\r\n"
               b"\r\nmust arrive exactly once\r\n")
        await aiosmtplib.send(msg, sender="zhang.san@cx.example", recipients=["out@remote.example"],
                              hostname="127.0.0.1", port=ports["submissions"], use_tls=True,
                              tls_context=client_tls(), username="zhang.san", password=PASSWORD)
        # 250 received: the upstream is down, so the message waits in the queue.
        conn = await asyncpg.connect(db_url)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if await conn.fetchval("select count(*) from queue where attempts >= 1"):
                    break
                await asyncio.sleep(0.05)
        finally:
            await conn.close()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    sink = CountingSink()
    srv = await loop.create_server(lambda: SinkSMTP(sink), "127.0.0.1", upstream)
    proc2, _, _ = await loop.run_in_executor(None, start_server, cfg, env)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not sink.messages:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # a duplicate would arrive within a retry interval
    finally:
        proc2.send_signal(signal.SIGTERM)
        await loop.run_in_executor(None, proc2.communicate)
        srv.close()
    assert len(sink.messages) == 1
    assert sink.messages[0].endswith(b"must arrive exactly once\r\n")
    conn = await asyncpg.connect(db_url)
    try:
        assert await conn.fetchval("select count(*) from queue") == 0
        assert await conn.fetchval("select count(*) from deliveries where status = 'delivered'") == 1
    finally:
        await conn.close()
