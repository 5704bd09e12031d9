"""Property tests: no input makes the parser or the session raise; errors are values."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from xmpp.proto.events import StreamEnded, StreamFailed
from xmpp.proto.parser import StreamParser
from xmpp.proto.state import SessionState

from .link import HEADER, make_link

FRAGMENTS = [
    b"<message>", b"</message>", b"<body>", b"</body>", b"<presence/>", b"<iq type='get'>",
    b"</iq>", b"&amp;", b"&bogus;", b"<!--", b"-->", b"<?x?>", b"<![CDATA[x]]>", b" ",
    b"<stream:stream>", b"</stream:stream>", b"xmlns='urn:x'", b"'", b"\"", b">", b"<",
    b"\xc3", b"\xa9", b"\x00", b"<a:b>", b"to='bad jid'", b"<!DOCTYPE x>",
]
noise = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=8)), max_size=30)


@settings(max_examples=400, deadline=None)
@given(noise, st.integers(min_value=1, max_value=16))
def test_parser_never_raises(parts: list[bytes], chunk: int) -> None:
    data = HEADER + b"".join(parts)
    parser = StreamParser(max_stanza_bytes=200, max_depth=6)
    events = []
    for i in range(0, len(data), chunk):
        events += parser.feed(data[i:i + chunk])
    failed = [e for e in events if isinstance(e, StreamFailed)]
    assert len(failed) <= 1
    if failed:
        assert events[-1] is failed[0]


@settings(max_examples=150, deadline=None)
@given(noise, st.sampled_from(["before-tls", "secured", "bound"]))
def test_session_never_raises(parts: list[bytes], stage: str) -> None:
    link = make_link(mechanisms=("PLAIN",), direct_tls=stage != "before-tls")
    if stage == "bound":
        link.pump()
        assert link.server.state is SessionState.BOUND
    else:
        link.server.receive_data(link.client.data_to_send())
    for part in parts:
        link.server.receive_data(part)
        while (ev := link.server.next_event()) is not None:
            link.server_events.append(ev)
    link.server.data_to_send()
    ended = [e for e in link.server_events if isinstance(e, StreamEnded)]
    assert len(ended) <= 1
    assert bool(ended) == (link.server.state is SessionState.CLOSED)
