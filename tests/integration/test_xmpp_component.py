"""External components (XEP-0114) end to end: slixmpp's ComponentXMPP connects with the
shared secret, then exchanges messages with a user; a wrong secret is refused."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import slixmpp
from slixmpp.componentxmpp import ComponentXMPP

from .test_xmpp import DOMAIN, TIMEOUT

pytestmark = pytest.mark.integration


BOT = f"bot.{DOMAIN}"
SECRET = "component-secret-1"


@pytest.fixture
def cfg_overrides() -> dict[str, dict[str, object]]:
    return {"xmpp": {"components": [f"{BOT}={SECRET}"]},
            "listen": {"xmpp_component": "127.0.0.1:0"}}


class Echo(ComponentXMPP):
    def __init__(self, secret: str, port: int) -> None:
        super().__init__(BOT, secret, "127.0.0.1", port)
        self.started = asyncio.Event()
        self.received: asyncio.Queue[Any] = asyncio.Queue()
        self.add_event_handler("session_start", lambda _e: self.started.set())
        self.add_event_handler("message", self._echo)

    def _echo(self, msg: Any) -> None:
        self.received.put_nowait(msg)
        if msg["type"] in ("chat", "normal"):
            msg.reply(f"echo: {msg['body']}").send()


async def test_component_exchanges_messages_with_a_user(xmpp: Any) -> None:
    bot = Echo(SECRET, xmpp.ports["xmpp_component"])
    bot.connect("127.0.0.1", xmpp.ports["xmpp_component"])
    try:
        await asyncio.wait_for(bot.started.wait(), TIMEOUT)
        zhang = await xmpp.connect("zhang.san/desk")
        zhang.send_message(mto=f"echo@{BOT}", mbody="你好", mtype="chat")
        got = await asyncio.wait_for(bot.received.get(), TIMEOUT)
        assert got["from"].full == f"zhang.san@{DOMAIN}/desk" and got["body"] == "你好"
        reply = await zhang.next_message()
        assert reply["body"] == "echo: 你好"
        assert reply["from"].full == f"echo@{BOT}"
    finally:
        bot.disconnect()
        await asyncio.sleep(0.1)


async def test_wrong_secret_is_refused(xmpp: Any) -> None:
    bot = Echo("wrong", xmpp.ports["xmpp_component"])
    failed = asyncio.Event()
    bot.add_event_handler("stream_error", lambda _e: failed.set())
    bot.add_event_handler("disconnected", lambda _e: failed.set())
    bot.connect("127.0.0.1", xmpp.ports["xmpp_component"])
    await asyncio.wait_for(failed.wait(), TIMEOUT)
    assert not bot.started.is_set()
    bot.disconnect()
    assert isinstance(bot, slixmpp.ComponentXMPP)
