"""Debian's command-line senders talking to our server, a slixmpp client receiving.

Skipped (with the reason) when `go-sendxmpp` or `sendxmpp` is not installed
(apt-get install go-sendxmpp sendxmpp).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_xmpp import DOMAIN, PASSWORD, cfg_overrides, xmpp  # noqa: F401

pytestmark = pytest.mark.integration


async def _run(args: list[str], stdin: bytes, home: Path) -> tuple[int, str]:
    env = {**os.environ, "HOME": str(home)}
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=env)
    out, _ = await asyncio.wait_for(proc.communicate(stdin), 30)
    return proc.returncode or 0, out.decode(errors="replace")


@pytest.mark.skipif(shutil.which("go-sendxmpp") is None,
                    reason="go-sendxmpp not installed (apt-get install go-sendxmpp)")
@pytest.mark.parametrize("direct", [False, True])
async def test_go_sendxmpp_to_slixmpp(xmpp: Any, tmp_path: Path, direct: bool) -> None:  # noqa: F811
    receiver = await xmpp.connect("li.si/pc")
    port = xmpp.ports["xmpps" if direct else "xmpp"]
    args = ["go-sendxmpp", "-u", f"zhang.san@{DOMAIN}", "-p", PASSWORD,
            "-j", f"127.0.0.1:{port}", "-n", f"li.si@{DOMAIN}"]
    if direct:
        args.insert(1, "-t")
    code, out = await _run(args, "来自 go-sendxmpp 的消息".encode(), tmp_path)
    assert code == 0, out
    msg = await receiver.next_message()
    assert msg["body"].strip() == "来自 go-sendxmpp 的消息"
    assert msg["from"].bare == f"zhang.san@{DOMAIN}"


@pytest.mark.skipif(shutil.which("sendxmpp") is None,
                    reason="sendxmpp not installed (apt-get install sendxmpp)")
async def test_sendxmpp_to_slixmpp(xmpp: Any, tmp_path: Path) -> None:  # noqa: F811
    receiver = await xmpp.connect("li.si/pc")
    port = xmpp.ports["xmpp"]
    args = ["sendxmpp", "-u", "zhang.san", "-p", PASSWORD, "-j", f"127.0.0.1:{port}",
            "-o", DOMAIN, "-t", "-n", f"li.si@{DOMAIN}"]
    code, out = await _run(args, b"hello from sendxmpp", tmp_path)
    assert code == 0, out
    msg = await receiver.next_message()
    assert msg["body"].strip() == "hello from sendxmpp"
    assert msg["from"].bare == f"zhang.san@{DOMAIN}"
