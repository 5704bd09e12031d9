"""Micro-benchmark of the c2s hot path (a benchmark, not a test).

    python -m xmpp.proto.bench [-n 200000]

Measures, per chat message stanza: parse (bytes → Element), serialize (Element → bytes),
parse+serialize, and the session path a routed message takes through two sessions
(receive, validate, stamp 'from', normalise 'to', then serialize for the recipient),
in CPU microseconds per message (process_time) and messages per second per core.
"""

from __future__ import annotations

import argparse
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable

from ..jid import JID
from .config import SessionConfig
from .events import BindRequested, StanzaFromClient
from .parser import StreamParser
from .serializer import to_bytes
from .session import ServerSession

HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>")
MESSAGE = (b"<message to='romeo@example.net' id='ktx72v49' type='chat'>"
           b"<body>Art thou not Romeo, and a Montague?</body>"
           b"<active xmlns='http://jabber.org/protocol/chatstates'/></message>")


def _bound_session(user: str) -> ServerSession:
    """A session driven through PLAIN + bind with a trusting fake driver."""
    import base64

    session = ServerSession(SessionConfig(domains=("example.com",), direct_tls=True),
                            new_id=lambda: "bench")
    session.receive_data(HEADER)
    auth = base64.b64encode(f"\0{user}\0pw".encode()).decode()
    session.receive_data(
        f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>"
        .encode())
    session.auth_result(True)
    session.receive_data(HEADER)
    session.receive_data(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                         b"<resource>r</resource></bind></iq>")
    while (ev := session.next_event()) is not None:
        if isinstance(ev, BindRequested):
            session.bound(JID(user, "example.com", ev.resource))
    session.data_to_send()
    return session


def _measure(name: str, n: int, fn: Callable[[], object]) -> float:
    for _ in range(min(n // 10, 5000)):
        fn()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        fn()
    cpu = (time.process_time() - cpu0) / n * 1e6
    wall = (time.perf_counter() - wall0) / n * 1e6
    print(f"{name:<34} {cpu:7.2f} µs CPU  {wall:7.2f} µs wall  {1e6 / cpu:>10,.0f} /s")
    return cpu


def main(argv: list[str] | None = None) -> None:
    parser_ = argparse.ArgumentParser(description="c2s hot-path micro-benchmark")
    parser_.add_argument("-n", type=int, default=200_000)
    args = parser_.parse_args(argv)
    n = args.n

    parser = StreamParser()
    parser.feed(HEADER)
    element = parser.feed(MESSAGE)[0].element  # type: ignore[union-attr]

    def parse() -> object:
        return parser.feed(MESSAGE)

    def serialize() -> object:
        return to_bytes(element)

    def both() -> object:
        return to_bytes(parser.feed(MESSAGE)[0].element)  # type: ignore[union-attr]

    sender, recipient = _bound_session("juliet"), _bound_session("romeo")

    def routed() -> object:
        sender.receive_data(MESSAGE)
        ev = sender.next_event()
        assert type(ev) is StanzaFromClient
        recipient.send_stanza(ev.element)
        return recipient.data_to_send()

    print(f"message: {len(MESSAGE)} bytes, n={n}")
    _measure("parse (expat → Element)", n, parse)
    _measure("serialize (ours)", n, serialize)
    _measure("serialize (ET.tostring, reference)", n // 4,
             lambda: ET.tostring(element))
    total = _measure("parse + serialize", n, both)
    routed_cpu = _measure("session path (2 sessions, no router)", n, routed)
    print(f"budget: parse+serialize {total:.1f} µs (target < 20 µs); "
          f"session path {routed_cpu:.1f} µs (Prosody ≈ 43 µs per routed message)")


if __name__ == "__main__":
    main()
