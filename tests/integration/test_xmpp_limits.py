"""XMPP limits and bad input against the real server, with a raw client.

Unauthenticated streams may only do TLS and SASL; malformed XML or an oversized stanza
closes that stream only; a client flooding past its rate limit is slowed down, not cut,
and the others do not notice.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from xmpp.jid import JID
from xmpp.proto.client import ClientSession
from xmpp.proto.events import SessionBound, StartTLSRequested, StreamEnded

pytestmark = pytest.mark.integration

DOMAIN = "cx.example"
PASSWORD = "Secret-pass-123"
RATE = 4000


@pytest.fixture
def cfg_overrides() -> dict[str, dict[str, object]]:
    return {"xmpp": {"rate_bytes_per_s": RATE, "max_stanza_size": 10000}}


def _ctx() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # self-signed test certificate
    return ctx


class Raw:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def read_until(self, marker: bytes, timeout: float = 10) -> bytes:
        buf = b""
        deadline = time.monotonic() + timeout
        while marker not in buf:
            data = await asyncio.wait_for(self.reader.read(65536),
                                          max(0.01, deadline - time.monotonic()))
            if not data:
                break
            buf += data
        return buf

    async def ping(self, ident: str) -> float:
        t0 = time.perf_counter()
        self.writer.write(f"<iq type='get' id='{ident}'><ping xmlns='urn:xmpp:ping'/></iq>"
                          .encode())
        out = await self.read_until(f'id="{ident}"'.encode(), timeout=30)
        assert f'id="{ident}"'.encode() in out
        return time.perf_counter() - t0


async def login(port: int, user: str, resource: str = "raw") -> Raw:
    session = ClientSession(JID(user, DOMAIN, resource), PASSWORD,
                            new_nonce=lambda: secrets.token_urlsafe(18))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    session.start()
    writer.write(session.data_to_send())
    while True:
        data = await asyncio.wait_for(reader.read(65536), 10)
        session.receive_data(data)
        while (ev := session.next_event()) is not None:
            if isinstance(ev, StartTLSRequested):
                await writer.drain()
                await writer.start_tls(_ctx())
                session.tls_started()
            elif isinstance(ev, SessionBound):
                writer.write(session.data_to_send())
                return Raw(reader, writer)
            elif isinstance(ev, StreamEnded):
                raise AssertionError(f"login failed: {ev}")
        out = session.data_to_send()
        if out:
            writer.write(out)
        if not data:
            raise AssertionError("closed during login")


@pytest.fixture
async def srv(services: Any) -> AsyncIterator[Any]:
    from gateway.app import RunningServer
    d = services.directory
    await d.add_unit("finance", "财政局")
    for user in ("zhang.san", "li.si"):
        await d.add_user(user, "finance", user, password=PASSWORD)
    server = RunningServer(services)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' to='cx.example' version='1.0'>")


async def test_unauthenticated_stream_may_not_send_stanzas(srv: Any) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.ports["xmpp"])
    writer.write(HEADER + b"<message to='li.si@cx.example'><body>x</body></message>")
    raw = Raw(reader, writer)
    out = await raw.read_until(b"</stream:stream>")
    assert b"starttls" in out and b"not-authorized" in out
    writer.close()


async def test_plain_before_tls_is_refused(srv: Any) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.ports["xmpp"])
    writer.write(HEADER + b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                 b"AHpoYW5nLnNhbgBTZWNyZXQtcGFzcy0xMjM=</auth>")
    out = await Raw(reader, writer).read_until(b"</failure>")
    assert b"encryption-required" in out  # RFC 6120 §6.5.4
    writer.close()


async def test_malformed_xml_closes_only_that_stream(srv: Any) -> None:
    good = await login(srv.ports["xmpp"], "li.si")
    bad = await login(srv.ports["xmpp"], "zhang.san")
    bad.writer.write(b"<message><body>unclosed</wrong></message>")
    out = await bad.read_until(b"</stream:stream>")
    assert b"not-well-formed" in out or b"invalid-xml" in out
    await good.ping("after")  # raises if the other stream got no answer: it is unaffected


async def test_oversized_stanza_is_policy_violation(srv: Any) -> None:
    c = await login(srv.ports["xmpp"], "zhang.san")
    c.writer.write(b"<message to='li.si@cx.example'><body>" + b"x" * 11000 + b"</body></message>")
    out = await c.read_until(b"</stream:stream>", timeout=30)
    assert b"policy-violation" in out


async def test_flood_is_slowed_and_others_are_not(srv: Any) -> None:
    flooder = await login(srv.ports["xmpp"], "zhang.san", "flood")
    other = await login(srv.ports["xmpp"], "li.si", "calm")
    await asyncio.sleep(1.2)  # let the buckets refill after the logins
    # 3 seconds' worth of the rate limit in one go, then a ping behind it.
    pad = b" " * 1000
    flooder.writer.write(pad * (3 * RATE // 1000))
    flood_ping = asyncio.ensure_future(flooder.ping("behind-flood"))
    await asyncio.sleep(0.2)
    await other.ping("calm")
    # The flood does not hurt others: the calm client's answer comes while the flooder's
    # ping is still waiting behind its own flood (an ordering, not a timing, check).
    assert not flood_ping.done()
    await flood_ping  # slowed down (answered after the calm client's), not dropped
