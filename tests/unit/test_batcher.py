"""cxkernel.batcher: every item written once, batches bounded, slots released on failure."""

from __future__ import annotations

import asyncio

import pytest

from cxkernel.batcher import Batcher


async def test_items_written_once_in_bounded_batches() -> None:
    seen: list[list[int]] = []

    async def run(batch: list[int]) -> None:
        seen.append(batch)
        await asyncio.sleep(0.001)

    b: Batcher[int] = Batcher(run, max_batch=3, max_inflight=1)
    for i in range(10):
        b.add(i)
    await b.drain()
    assert sorted(i for batch in seen for i in batch) == list(range(10))
    assert all(len(batch) <= 3 for batch in seen)
    assert not b.busy


async def test_a_failed_batch_frees_its_slot() -> None:
    calls = 0

    async def run(batch: list[int]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("commit failed")

    b: Batcher[int] = Batcher(run, max_batch=1, max_inflight=1)
    b.add(1)
    b.add(2)
    await b.drain()  # the second batch still runs after the first one failed
    assert calls == 2


async def test_window_gathers_items_added_meanwhile() -> None:
    seen: list[list[int]] = []

    async def run(batch: list[int]) -> None:
        seen.append(batch)

    b: Batcher[int] = Batcher(run, max_batch=10, max_inflight=1, window=0.05)
    b.add(1)
    await asyncio.sleep(0.01)
    b.add(2)
    await b.drain()
    assert seen == [[1, 2]]


@pytest.mark.parametrize("inflight", [1, 2])
async def test_drain_waits_for_batches_in_flight(inflight: int) -> None:
    done: list[int] = []

    async def run(batch: list[int]) -> None:
        await asyncio.sleep(0.01)
        done.extend(batch)

    b: Batcher[int] = Batcher(run, max_batch=2, max_inflight=inflight)
    for i in range(5):
        b.add(i)
    await b.drain()
    assert sorted(done) == [0, 1, 2, 3, 4]
