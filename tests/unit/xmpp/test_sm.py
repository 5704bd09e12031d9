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


def _emit(led: Ledger, data: bytes) -> None:
    """What the driver (xmpp.server emit) does with a stanza for a pinned ledger."""
    out = led.sent_stanza(data)
    if led.held is not None:
        led.held.append((led.sent, out))
    else:
        led.conn.put(out)


def test_pin_holds_writes_until_the_mark_commits() -> None:
    led = Ledger("z@cx.example", "id")
    conn = led.conn = _Conn()
    _emit(led, b"<p0/>")
    led.pin(led.sent + 1)
    _emit(led, b"<m1/>")            # the marked stanza
    _emit(led, b"<p2/>")            # local traffic behind it waits too (order)
    led.pin(led.sent + 1)
    _emit(led, b"<m3/>")            # a second mark, not committed yet
    assert conn.out == [b"<p0/>" + R] and led.sent == 4
    led.release(1)                  # the first mark committed: up to the second one
    assert conn.out[1:] == [b"<m1/><p2/>"]
    led.release(1)
    assert conn.out[2:] == [b"<m3/>"] and led.held is None and not led.marks


def test_release_after_the_session_moved_writes_nothing() -> None:
    # resumed on another connection meanwhile: the whole queue was sent there already
    led = Ledger("z@cx.example", "id")
    old = led.conn = _Conn()
    led.pin(1)
    _emit(led, b"<m/>")
    new = led.conn = _Conn()
    led.release(1)
    assert old.out == [] and new.out == [] and len(led.queue) == 1 and led.held is None
