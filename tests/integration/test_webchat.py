"""The web chat at /chat/: without Converse.js the page says how to install it (the server
runs as usual); `cxgw web install` fetches it with npm (skipped, with the reason, where
npm is missing) and /chat/ then serves the page set up for our domain and WebSocket, and
the package's files, never a file outside it."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import urllib.error
import urllib.request
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), ""


async def test_chat_page_without_converse(server: Any) -> None:
    status, body, _ = await asyncio.to_thread(
        get, f"http://127.0.0.1:{server.ports['http']}/chat/")
    assert status == 503 and b"cxgw web install" in body
    # The rest of the server is unaffected.
    status, _, _ = await asyncio.to_thread(
        get, f"http://127.0.0.1:{server.ports['http']}/health")
    assert status == 200


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
async def test_web_install_then_served(server: Any, tmp_path: Any, capsys: Any) -> None:
    from gateway.cli.main import main
    cfg = server.services.cfg
    conf = tmp_path / "web.toml"
    conf.write_text(f'[server]\nstate_dir = "{cfg.server.state_dir}"\n')
    code = await asyncio.to_thread(main, ["-c", str(conf), "web", "install"])
    out = capsys.readouterr()
    assert code == 0, out.err
    base = f"http://127.0.0.1:{server.ports['http']}/chat/"
    status, body, ctype = await asyncio.to_thread(get, base)
    assert status == 200 and ctype.startswith("text/html")
    m = re.search(rb"const settings = (\{.*?\});", body)
    assert m is not None
    settings = json.loads(m.group(1))
    assert settings["locked_domain"] == "cx.example"
    assert settings["muc_domain"] == "conference.cx.example"
    assert b'"/xmpp-websocket"' in body
    status, js, ctype = await asyncio.to_thread(get, base + "dist/converse.min.js")
    assert status == 200 and "javascript" in ctype and len(js) > 100000
    for bad in ("dist/../../tls/server.key", "dist/%2e%2e/%2e%2e/tls/server.key",
                "dist/nope.js", "other"):
        status, body, _ = await asyncio.to_thread(get, base + bad)
        assert status == 404 and b"PRIVATE KEY" not in body
