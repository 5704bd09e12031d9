# ruff: noqa: F811  (fixtures imported from test_xmpp_muc)
"""The web chat end to end in headless Chromium (issue 15 item 3): Converse.js from npm,
served at /chat/, logs in over our WebSocket, shows the directory roster, sends a message
that a slixmpp client receives, and joins the unit room (a slixmpp occupant sees it
arrive). Chromium is driven over the DevTools protocol with the `websockets` package.
Skipped, with the reason, where chromium or npm is missing."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets

from tests.integration.test_xmpp_muc import FIN, cfg_overrides, xmpp  # noqa: F401
from tests.netutil import free_port

from .test_xmpp import DOMAIN, PASSWORD

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("chromium") is None,
                       reason="chromium is not installed (Debian package chromium)"),
    pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed"),
]
WAIT = 30.0



class Page:
    """One Chromium tab over the DevTools protocol."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.log: list[str] = []   # console messages and exceptions, shown on failure

    async def call(self, method: str, **params: Any) -> Any:
        n = next(self.ids)
        await self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), WAIT))
            if msg.get("method") == "Runtime.exceptionThrown":
                self.log.append(json.dumps(msg["params"]["exceptionDetails"])[:500])
            elif msg.get("method") == "Runtime.consoleAPICalled":
                self.log.append(" ".join(str(a.get("value", a.get("description", "")))
                                         for a in msg["params"]["args"])[:500])
            if msg.get("id") == n:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def js(self, expr: str) -> Any:
        res = await self.call("Runtime.evaluate", expression=expr, returnByValue=True,
                              awaitPromise=True)
        if "exceptionDetails" in res:
            raise AssertionError(f"{expr}: {res['exceptionDetails']}")
        return res["result"].get("value")

    async def until(self, expr: str, what: str) -> Any:
        for _ in range(int(WAIT / 0.2)):
            value = await self.js(expr)
            if value:
                return value
            await asyncio.sleep(0.2)
        text = await self.js("document.body ? document.body.innerText.slice(0, 2000) : ''")
        html = await self.js("document.documentElement.outerHTML.slice(0, 1500)")
        raise AssertionError(f"{what} did not happen; page shows:\n{text}\n{html}\n"
                             + "\n".join(self.log[-20:]))


@pytest.fixture
async def browser(tmp_path: Any) -> AsyncIterator[Page]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
        "--disable-dev-shm-usage", f"--remote-debugging-port={port}",
        f"--user-data-dir={tmp_path / 'chromium'}", "about:blank",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def pages() -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as resp:
            return [t for t in json.load(resp) if t.get("type") == "page"]
    try:
        targets: list[dict[str, Any]] = []
        for _ in range(100):
            try:
                targets = await asyncio.to_thread(pages)
                if targets:
                    break
            except OSError:
                pass
            await asyncio.sleep(0.2)
        assert targets, "chromium did not start"
        async with websockets.connect(targets[0]["webSocketDebuggerUrl"],
                                      max_size=None) as ws:
            page = Page(ws)
            await page.call("Runtime.enable")
            yield page
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def test_converse_in_chromium(xmpp: Any, browser: Page) -> None:
    from gateway import webchat
    await asyncio.to_thread(webchat.install, xmpp.services.cfg)
    li = await xmpp.connect("li.si")
    await li.muc.join_muc_wait(FIN, "李四", timeout=WAIT)
    url = f"http://127.0.0.1:{xmpp.ports['http']}/chat/"
    await browser.call("Page.navigate", url=url)
    await browser.until("!!document.querySelector('input[name=jid]')", "the login form")
    await browser.js(f"""(() => {{
        const form = document.querySelector('input[name=jid]').form;
        form.querySelector('input[name=jid]').value = 'zhang.san';
        form.querySelector('input[name=password]').value = {json.dumps(PASSWORD)};
        form.requestSubmit();
        return true; }})()""")
    # The directory roster: the unit's colleagues appear under their names.
    await browser.until("document.body.innerText.includes('李四')", "the roster")
    await browser.js(f"location.hash = '#converse/chat?jid=li.si@{DOMAIN}'; true")
    await browser.until("!!document.querySelector('textarea.chat-textarea')",
                        "the chat box")
    await browser.js("""(() => {
        const t = document.querySelector('textarea.chat-textarea');
        t.value = '浏览器里的消息';
        t.dispatchEvent(new Event('input', {bubbles: true}));
        t.form.requestSubmit();
        return true; })()""")
    msg = await li.next_message(timeout=WAIT)
    assert msg["body"] == "浏览器里的消息" and msg["from"].bare == f"zhang.san@{DOMAIN}"
    # The unit room: joining it from the browser is seen by the occupant already there.
    await browser.js(f"location.hash = '#converse/room?jid={FIN}'; true")
    for _ in range(int(WAIT / 0.2)):
        pres = await asyncio.wait_for(li.room_presences.get(), WAIT)
        if pres["from"].bare == str(FIN) and pres["from"].resource != "李四" \
                and pres["type"] != "unavailable":
            break
    else:
        raise AssertionError("zhang.san never joined the unit room")
