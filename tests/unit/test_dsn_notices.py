"""Which DSNs the scheduler asks the bounce stage for (RFC 3461 §4.1 NOTIFY), with a
fake bounce sink: no database, no sockets."""

from __future__ import annotations

from datetime import UTC, datetime

from cxkernel.config import QueueConfig
from mailrelay.addressbook import AddressBook
from mailrelay.queue.repo import QueueRow
from mailrelay.queue.scheduler import Outcome, Scheduler, dsn_request


def row(i: int, notify: str | None, *, sender: str = "a@cx.example", transport: str = "local",
        qid: str = "Q1", orig: str | None = None) -> QueueRow:
    now = datetime.now(UTC)
    return QueueRow(i, qid, 1, sender, f"r{i}@x.example", orig, "", transport, "active", 1,
                    now, None, now, 10, False, "env1", notify, "HDRS")


async def notices(items, **kw) -> list[tuple[str, list[int]]]:
    got: list[tuple[str, list[int]]] = []

    async def sink(group, kind):
        got.append((kind, [r.id for r, _o in group]))

    sched = Scheduler(None, QueueConfig(), lambda: AddressBook("cx.example"), None, sink)  # type: ignore[arg-type]
    await sched._notices(items, **kw)
    return got


async def test_failure_notices_follow_notify():
    bad = Outcome("perm", 550, "5.1.1", "no such user")
    items = [(row(1, None), bad), (row(2, "FAILURE"), bad), (row(3, "SUCCESS"), bad),
             (row(4, "NEVER"), bad), (row(5, None, sender=""), bad)]
    assert await notices(items, kind="failed") == [("failed", [1, 2])]


async def test_success_notices_only_when_asked_and_not_passed_on():
    ok = Outcome("ok")
    passed = Outcome("ok", dsn_passed=True)
    items = [(row(1, "SUCCESS"), ok), (row(2, None), ok), (row(3, "FAILURE"), ok),
             (row(4, "SUCCESS,FAILURE", transport="remote"), ok),
             (row(5, "SUCCESS", transport="remote"), passed),
             (row(6, "SUCCESS", sender=""), ok)]
    assert sorted(await notices(items, success=True)) == [("delivered", [1]), ("relayed", [4])]


async def test_delay_and_grouping_by_queue_id():
    slow = Outcome("temp", 451, "4.4.1", "no answer")
    items = [(row(1, "DELAY", qid="A"), slow), (row(2, None, qid="B"), slow),
             (row(3, None, qid="A"), slow), (row(4, "FAILURE", qid="A"), slow)]
    assert sorted(await notices(items, kind="delayed")) == [("delayed", [1, 3]),
                                                             ("delayed", [2])]


def test_dsn_request_for_the_next_hop():
    assert dsn_request([row(1, None)]).envid == "env1"  # ENVID/RET alone are passed on
    r = dsn_request([row(1, "SUCCESS", orig="Orig@x.example"), row(2, None)])
    assert r is not None and r.notify == {"r1@x.example": "SUCCESS"}
    assert r.orcpt == {"r1@x.example": "Orig@x.example"}
