"""`smtp.group_commit_ms`: a batch of the submission stage waits that long for company
before its COMMIT, so a message submitted meanwhile shares the first one's COMMIT."""

from __future__ import annotations

import asyncio

from cxkernel.metrics import Metrics
from mailrelay.addressbook import AddressBook
from mailrelay.submit import Submission, Submitter

MSG = b"From: a@remote.example\r\nSubject: s\r\n\r\nx\r\n"


async def _run(services, window_ms: float) -> float:
    metrics = Metrics()
    book = AddressBook("cx.example")
    sub = Submitter(services.db.pool, lambda: book, "mail.cx.example", metrics,
                    group_commit_ms=window_ms)
    first = asyncio.ensure_future(sub.submit(Submission("a@remote.example",
                                                        ["b@remote.example"], MSG)))
    while not sub._batches.busy:  # the first message is pending, its batch gathering
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(sub.submit(Submission("a@remote.example",
                                                         ["c@remote.example"], MSG)))
    await asyncio.gather(first, second)
    await sub.close()
    return metrics.get("mail_group_commits_total")


async def test_window_gathers_a_batch(services):
    assert await _run(services, 2000.0) == 1  # one COMMIT for both


async def test_no_window_commits_at_once(services):
    assert await _run(services, 0.0) == 2
