"""Interop with swaks (Debian package `swaks`): plain SMTP, STARTTLS+AUTH submission,
pipelining, and a refused relay. Skipped with a reason where swaks is not installed."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from tests.integration.mailutil import PASSWORD, seed_city, wait_inbox

pytestmark = pytest.mark.skipif(shutil.which("swaks") is None,
                                reason="swaks is not installed (apt-get install swaks)")


async def swaks(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "swaks", "--server", "127.0.0.1", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode("utf-8", "replace")


async def test_swaks_plain_pipelining_and_submission(server):
    await seed_city(server)
    code, out = await swaks("--port", str(server.ports["smtp"]), "--from", "a@example.org",
                            "--to", "li.si@cx.example", "--pipeline", "--header", "Subject: swaks")
    assert code == 0, out
    assert "250 2.0.0 Ok: queued as" in out
    code, out = await swaks("--port", str(server.ports["submission"]), "--tls", "--auth", "PLAIN",
                            "--auth-user", "zhang.san@cx.example", "--auth-password", PASSWORD,
                            "--from", "zhang.san@cx.example", "--to", "li.si@cx.example",
                            "--header", "From: zhang.san@cx.example")
    assert code == 0, out
    assert "235 2.7.0" in out
    code, out = await swaks("--port", str(server.ports["submissions"]), "--tls-on-connect",
                            "--auth", "LOGIN", "--auth-user", "zhang.san", "--auth-password",
                            PASSWORD, "--from", "zhang.san@cx.example", "--to", "li.si@cx.example",
                            "--header", "From: zhang.san@cx.example")
    assert code == 0, out
    msgs = await wait_inbox(server, "li.si@cx.example", 3)
    assert len(msgs) == 3


async def test_swaks_relay_refused(server):
    await seed_city(server)
    code, out = await swaks("--port", str(server.ports["smtp"]), "--from", "a@example.org",
                            "--to", "victim@example.net")
    assert code != 0
    assert "554 5.7.1 Relay access denied" in out
