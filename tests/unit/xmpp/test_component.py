"""The XEP-0114 component stream core, bytes in and out (no sockets)."""

from __future__ import annotations

from xmpp.component import (
    Bound,
    Closed,
    ComponentServer,
    ComponentStream,
    HandshakeFailed,
    Stanza,
    handshake_digest,
)

HEADER = (b"<stream:stream xmlns='jabber:component:accept' "
          b"xmlns:stream='http://etherx.jabber.org/streams' to='bot.cx.example'>")


def events(s: ComponentStream) -> list[object]:
    out: list[object] = []
    while (ev := s.next_event()) is not None:
        out.append(ev)
    return out


def bound_stream() -> ComponentStream:
    s = ComponentStream({"bot.cx.example": "secret"}, lambda d: False, stream_id="abc123")
    s.receive_data(HEADER)
    assert b"from=\"bot.cx.example\"" in s.data_to_send()
    s.receive_data(f"<handshake>{handshake_digest(s.stream_id, 'secret')}</handshake>".encode())
    assert s.data_to_send() == b"<handshake/>"
    assert events(s) == [Bound("bot.cx.example")]
    return s


def test_handshake_digest_is_sha1_hex_of_id_and_secret() -> None:
    assert handshake_digest("3BF96D32", "sesame") == "7a98dc4c9e92493d7fd66a25364c862637789c45"


def test_stanzas_move_to_client_namespace() -> None:
    s = bound_stream()
    s.receive_data(b"<message from='echo@bot.cx.example' to='zhang.san@cx.example' "
                   b"type='chat'><body>hi</body></message>")
    (ev,) = events(s)
    assert isinstance(ev, Stanza)
    assert ev.element.tag == "{jabber:client}message"
    assert ev.element.findtext("{jabber:client}body") == "hi"


def test_wrong_secret_unknown_domain_and_foreign_from() -> None:
    s = ComponentStream({"bot.cx.example": "secret"}, lambda d: False, stream_id="abc123")
    s.receive_data(HEADER + b"<handshake>00</handshake>")
    assert b"not-authorized" in s.data_to_send() and s.closed
    u = ComponentStream({}, lambda d: False, stream_id="abc123")
    u.receive_data(HEADER)
    assert b"host-unknown" in u.data_to_send() and u.closed
    b = bound_stream()
    b.receive_data(b"<message from='zhang.san@cx.example' to='li.si@cx.example'/>")
    assert b"invalid-from" in b.data_to_send()
    assert events(b) == [Closed()]


def test_second_connection_for_a_domain_conflicts() -> None:
    s = ComponentStream({"bot.cx.example": "secret"}, lambda d: True, stream_id="abc123")
    s.receive_data(HEADER)
    s.data_to_send()
    s.receive_data(f"<handshake>{handshake_digest(s.stream_id, 'secret')}</handshake>".encode())
    assert b"conflict" in s.data_to_send() and s.closed


def test_failed_handshake_is_an_event_for_the_driver() -> None:
    s = ComponentStream({"bot.cx.example": "secret"}, lambda d: False, stream_id="abc123")
    s.receive_data(HEADER + b"<handshake>00</handshake>")
    assert events(s) == [HandshakeFailed("bot.cx.example"), Closed()]


def test_unfinished_start_tag_before_handshake_hits_the_small_limit() -> None:
    s = ComponentStream({"bot.cx.example": "secret"}, lambda d: False, stream_id="abc123",
                        max_unauth_stanza=2000)
    s.receive_data(HEADER + b"<handshake a='" + b"A" * 3000)
    assert b"policy-violation" in s.data_to_send() and s.closed


def test_unfinished_start_tag_after_handshake_hits_the_stanza_limit() -> None:
    s = bound_stream()
    s.receive_data(b"<message x='")
    sent = 0
    while not s.closed and sent < 2 * 262144:
        s.receive_data(b"A" * 16384)
        sent += 16384
    assert s.closed and b"policy-violation" in s.data_to_send()
    assert sent <= 262144 + 16384


def test_penalty_doubles_per_failure_and_spaces_parallel_checks() -> None:
    server = ComponentServer(None, {}, auth_delay=1.0)  # type: ignore[arg-type]
    assert server.check_slot("192.0.2.1") == 0.0
    server.failed("192.0.2.1", "bot.cx.example")
    first = server.check_slot("192.0.2.1")
    second = server.check_slot("192.0.2.1")  # a parallel connection waits one more delay
    assert 0.5 < first <= 1.0 and second - first >= 0.99
    server.failed("192.0.2.1", "bot.cx.example")
    assert server.penalties["192.0.2.1"][0] == 2
    assert server.check_slot("192.0.2.9") == 0.0  # other addresses are not slowed
    server.succeeded("192.0.2.1")
    assert server.check_slot("192.0.2.1") == 0.0
