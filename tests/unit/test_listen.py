"""cxkernel.listen with a fake pool: listen again after a loss, catch up, stay put when
healthy."""

from __future__ import annotations

import asyncio
from typing import Any

from cxkernel.listen import Listener


class FakeConn:
    def __init__(self, n: int) -> None:
        self.n = n
        self.closed = False
        self.listeners: dict[str, Any] = {}
        self.on_term: list[Any] = []

    async def add_listener(self, channel: str, cb: Any) -> None:
        self.listeners[channel] = cb

    async def remove_listener(self, channel: str, cb: Any) -> None:
        self.listeners.pop(channel, None)

    def add_termination_listener(self, cb: Any) -> None:
        self.on_term.append(cb)

    def remove_termination_listener(self, cb: Any) -> None:
        self.on_term.remove(cb)

    def is_closed(self) -> bool:
        return self.closed

    def get_server_pid(self) -> int:
        return self.n

    async def execute(self, sql: str) -> str:
        if self.closed:
            raise ConnectionError("closed")
        return "SELECT 1"

    def terminate(self) -> None:
        self.closed = True
        for cb in list(self.on_term):
            cb(self)

    def notify(self, channel: str, payload: str) -> None:
        self.listeners[channel](self, 1, channel, payload)


class FakePool:
    def __init__(self) -> None:
        self.conns: list[FakeConn] = []
        self.down = 0  # acquisitions that fail before the database is back

    async def acquire(self) -> FakeConn:
        if self.down:
            self.down -= 1
            raise OSError("connection refused")
        self.conns.append(FakeConn(len(self.conns) + 1))
        return self.conns[-1]

    async def release(self, conn: FakeConn) -> None:
        pass


async def test_listens_again_and_catches_up() -> None:
    pool = FakePool()
    got: list[str] = []
    caught = asyncio.Event()
    lst = Listener(pool, retry_max=0.05, check_every=0.01)
    sub = await lst.subscribe("queue_ready", got.append, caught.set)
    pool.conns[-1].notify("queue_ready", "a")
    pool.down = 3  # the database is away for three tries
    pool.conns[-1].terminate()
    await asyncio.wait_for(caught.wait(), 5)
    assert lst.reconnects == 1 and len(pool.conns) == 2 and lst.backend_pid() == 2
    pool.conns[-1].notify("queue_ready", "b")  # the new connection listens on the channel
    assert got == ["a", "b"]
    await sub.close()
    assert not lst.listening


async def test_check_leaves_a_healthy_connection_alone() -> None:
    pool = FakePool()
    lst = Listener(pool, check_every=0.01)
    sub = await lst.subscribe("directory_changed", lambda p: None)
    for _ in range(5):
        lst.check()
        await asyncio.sleep(0.02)
    assert lst.reconnects == 0 and len(pool.conns) == 1
    await sub.close()


async def test_a_silently_closed_connection_is_noticed() -> None:
    """No termination callback (a drop the driver did not report): the periodic look."""
    pool = FakePool()
    back = asyncio.Event()
    lst = Listener(pool, check_every=0.01)
    sub = await lst.subscribe("mailbox_changed", lambda p: None, back.set)
    pool.conns[-1].closed = True
    await asyncio.wait_for(back.wait(), 5)
    assert lst.reconnects == 1
    await sub.close()
