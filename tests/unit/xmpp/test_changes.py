"""Change notices of per-node caches (``xmpp.changes``) and explicit stores
(``xmpp.stores``): payload splitting, own notices skipped, handlers in order, catch-up
after a reconnect, and no server start without stores."""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any

import pytest

from cxkernel.config import XMPPConfig
from cxkernel.events import EventBus
from xmpp.changes import PAYLOAD_LIMIT, US, Changes
from xmpp.dircache import DirectoryCache
from xmpp.hooks import Hooks
from xmpp.host import Host
from xmpp.router import Router
from xmpp.stores import Stores


def test_payloads_split_under_the_notify_limit() -> None:
    c = Changes()
    jids = [f"user{i:05d}@example.org" for i in range(2000)]
    out = c.payloads("block", "li.si@cx.example", jids)
    assert len(out) > 1
    assert all(len(p.encode()) <= PAYLOAD_LIMIT for p in out)
    got = [j for p in out for j in p.split(US)[3:]]
    assert got == jids
    assert all(p.split(US)[:3] == [c.origin, "block", "li.si@cx.example"] for p in out)
    assert c.payloads("unblock", "li.si@cx.example") == [
        f"{c.origin}{US}unblock{US}li.si@cx.example"]


class FakeListener:
    def __init__(self) -> None:
        self.subs: list[Any] = []

    async def subscribe(self, channel: str, on_notify: Any, on_reconnect: Any) -> Any:
        self.subs.append((channel, on_notify, on_reconnect))
        listener = self

        class Sub:
            async def close(self) -> None:
                listener.subs.clear()
        return Sub()


async def test_other_nodes_notices_run_in_order_and_own_are_skipped() -> None:
    here, there = Changes(), Changes()
    seen: list[tuple[str, list[str]]] = []
    resets: list[int] = []

    async def handler(owner: str, items: list[str]) -> None:
        await asyncio.sleep(0)  # a handler that awaits does not let the next one overtake
        seen.append((owner, items))

    async def reset() -> None:
        resets.append(1)

    here.on("block", handler, reset)
    with pytest.raises(ValueError):
        here.on("block", handler)
    listener = FakeListener()
    await here.start(listener)  # type: ignore[arg-type]
    (_channel, hear, reconnect), = listener.subs
    for p in here.payloads("block", "own@x", ["a"]):
        hear(p)  # this process's own notice: already applied
    for i in range(3):
        for p in there.payloads("block", f"o{i}@x", [f"j{i}"]):
            hear(p)
    hear(f"{there.origin}{US}unknown{US}z@x")  # a kind no feature here keeps: ignored
    hear("garbage")
    await reconnect()
    await here.stop()
    assert seen == [(f"o{i}@x", [f"j{i}"]) for i in range(3)]
    assert here.heard == 3 and resets == [1] and here.resets == 1


def test_a_host_cannot_be_built_without_stores() -> None:
    bus, hooks = EventBus(), Hooks()

    async def load() -> Any:
        return [], {}
    with pytest.raises(TypeError):
        Host("cx.example", XMPPConfig(), bus, hooks,  # type: ignore[call-arg]
             Router("cx.example", bus, hooks, lambda _b: True), DirectoryCache(load))
    with pytest.raises(ValueError):
        Stores.postgres(None)


def test_no_in_memory_store_in_the_server() -> None:
    """Issue 14 item 6: the doubles live in tests/; the server has no fallback."""
    root = pathlib.Path(__file__).resolve().parents[3] / "xmpp"
    offenders = [str(p) for p in root.rglob("*.py")
                 if "class Memory" in p.read_text() or "MemoryStore(" in p.read_text()]
    assert offenders == []
