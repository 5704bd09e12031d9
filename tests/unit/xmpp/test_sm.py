"""XEP-0198 ledger (pure): counters modulo 2^32, acks, ack requests."""

from __future__ import annotations

import pytest

from xmpp.features.sm import MOD, HandledTooHigh, Ledger, R


def test_ack_drops_acknowledged_and_requests_once() -> None:
    led = Ledger("z@cx.example", "id")
    assert led.sent_stanza(b"<message/>") == b"<message/>" + R
    assert led.sent_stanza(b"<presence/>") == b"<presence/>"  # one request outstanding
    assert led.sent == 2
    assert led.ack(1) == 1 and [d for d, _ in led.queue] == [b"<presence/>"]
    assert not led.requested
    assert led.ack(1) == 0
    with pytest.raises(HandledTooHigh):
        led.ack(3)


def test_counters_wrap_at_2_32() -> None:
    led = Ledger("z@cx.example", "id")
    led.acked = MOD - 2
    for i in range(4):
        led.sent_stanza(b"<m%d/>" % i)
    assert led.sent == 2
    assert led.ack(0) == 2 and led.acked == 0
    assert led.ack(2) == 2 and not led.queue
    led.handled = MOD - 1
    led.received()
    assert led.handled == 0


def test_mark_elsewhere_and_take() -> None:
    led = Ledger("z@cx.example")
    led.sent_stanza(b"a")
    led.sent_stanza(b"b")
    led.mark_elsewhere()
    assert led.take() == [(b"a", False), (b"b", True)]
    assert led.sent == 2 and not led.queue


class _Conn:
    def __init__(self) -> None:
        self.out: list[bytes] = []

    def put(self, data: bytes) -> None:
        self.out.append(data)


def test_pin_holds_writes_until_unpinned_to_the_same_connection() -> None:
    led = Ledger("z@cx.example", "id")
    conn = led.conn = _Conn()
    led.pin()
    led.held.append(led.sent_stanza(b"<m1/>"))  # type: ignore[union-attr]
    led.held.append(led.sent_stanza(b"<m2/>"))  # type: ignore[union-attr]
    assert conn.out == [] and led.sent == 2  # counted and queued, not written
    led.unpin()
    assert conn.out == [b"<m1/>" + R + b"<m2/>"] and led.held is None


def test_unpin_after_the_session_moved_writes_nothing() -> None:
    # resumed on another connection meanwhile: the whole queue was sent there already
    led = Ledger("z@cx.example", "id")
    old = led.conn = _Conn()
    led.pin()
    led.held.append(led.sent_stanza(b"<m/>"))  # type: ignore[union-attr]
    new = led.conn = _Conn()
    led.unpin()
    assert old.out == [] and new.out == [] and len(led.queue) == 1
