"""Connection caps, the login deadline and quiet logs on every listener (issue #12, items
2 and 8), against a running server with real sockets, on uvloop."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import pytest

from .mailutil import client_tls

PER_IP = 2
pytestmark = pytest.mark.filterwarnings(
    "ignore:Overriding the \"event_loop_policy\" fixture:DeprecationWarning")


@pytest.fixture(scope="module")
def event_loop_policy() -> asyncio.AbstractEventLoopPolicy:
    """These run on uvloop, as the server does (the SMTP cap once failed only there)."""
    uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed")
    return uvloop.EventLoopPolicy()  # type: ignore[no-any-return]


@pytest.fixture
def cfg_overrides() -> dict[str, dict[str, object]]:
    limits: dict[str, object] = {f"{name}_max_per_ip": PER_IP for name in (
        "smtp", "submission", "submissions", "imap", "imaps", "xmpp", "xmpps", "http",
        "pop3", "pop3s", "managesieve")}
    limits.update(imap_preauth_seconds=1.5, xmpp_preauth_seconds=1.5,
                  submission_preauth_seconds=1.5)
    return {"limits": limits}


async def hold(port: int, n: int, tls: bool = False) -> list[asyncio.StreamWriter]:
    """Open `n` connections and keep them (reading the greeting where there is one)."""
    out = []
    for _ in range(n):
        _r, w = await asyncio.open_connection("127.0.0.1", port,
                                              ssl=client_tls() if tls else None)
        out.append(w)
    await asyncio.sleep(0.1)  # let the server account for them
    return out


async def read_all(r: asyncio.StreamReader) -> bytes:
    try:
        return await asyncio.wait_for(r.read(), 30)
    except (ConnectionError, ssl.SSLError):
        return b""


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


@pytest.mark.parametrize("listener,refusal", [
    ("smtp", b"421 4.7.0 "),
    ("submission", b"421 4.7.0 "),
    ("imap", b"* BYE [UNAVAILABLE]"),
    ("xmpp", b"<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"),
    ("http", b"HTTP/1.1 503 "),
    ("pop3", b"-ERR [SYS/TEMP] Too many connections"),
    ("managesieve", b'BYE (TRYLATER) "Too many connections"'),
])
async def test_per_address_cap_refuses_politely(server: Any, listener: str, refusal: bytes,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
    port = server.ports[listener]
    held = await hold(port, PER_IP)
    r, w = await asyncio.open_connection("127.0.0.1", port)
    got = await read_all(r)  # the refusal, then the server closes
    w.close()
    assert refusal in got, got
    metrics = server.services.metrics
    assert metrics.get("connections_refused_total", listener=listener, reason="per-ip") == 1
    lines = [r for r in caplog.records if "connection refused" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO  # one line per refusal
    no_tracebacks(caplog)
    for h in held:
        h.close()
    await asyncio.sleep(0.2)
    # slots are free again
    r, w = await asyncio.open_connection("127.0.0.1", port)
    if listener != "http":
        first = await asyncio.wait_for(r.read(200), 10)
        assert refusal not in first and first, first
    w.close()


@pytest.mark.parametrize("listener,refusal", [
    ("imaps", b"* BYE [UNAVAILABLE]"),
    ("xmpps", b"<policy-violation"),
    ("submissions", b"421 4.7.0"),
])
async def test_implicit_tls_listeners_refuse_after_the_handshake(server: Any, listener: str,
                                                                 refusal: bytes) -> None:
    port = server.ports[listener]
    held = await hold(port, PER_IP, tls=listener == "submissions")
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls())
    got = await read_all(r)
    w.close()
    assert refusal in got, got
    assert server.services.metrics.get("connections_refused_total", listener=listener,
                                       reason="per-ip") == 1
    for h in held:
        h.close()
    if listener == "submissions":
        return  # asyncio's TLS: no connection is made (nor counted) before the handshake
    # a refused client that never does the handshake is dropped after a few seconds
    comps = server.services.components
    limiter = (comps["imap"].limiters["imaps"] if listener == "imaps"
               else comps["xmpp"].c2s.limiters["xmpps"])
    for _ in range(100):  # the closed ones are gone
        if limiter.active == 0:
            break
        await asyncio.sleep(0.05)
    held = await hold(port, PER_IP)
    r, w = await asyncio.open_connection("127.0.0.1", port)
    assert await read_all(r) == b""
    w.close()
    for h in held:
        h.close()


async def trickle(port: int, greeting: bytes, drip: bytes) -> tuple[int, bytes]:
    """Send `drip` one byte every 0.3 s after the greeting; return (bytes sent before
    the server closed, what the server said)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    if greeting:
        assert greeting in await asyncio.wait_for(r.read(4096), 10)
    said = b""
    sent = 0
    for byte in drip:
        try:
            w.write(bytes([byte]))
            await w.drain()
        except ConnectionError:
            break
        sent += 1
        try:
            chunk = await asyncio.wait_for(r.read(4096), 0.3)
        except TimeoutError:
            continue
        said += chunk
        if not chunk:
            break
    w.close()
    return sent, said


@pytest.mark.parametrize("listener,greeting,closing", [
    ("imap", b"* OK", b"* BYE"),
    ("xmpp", b"", b"connection-timeout"),
    ("submission", b"220 ", b"421 4.4.2"),
])
async def test_a_trickle_does_not_extend_the_login_deadline(server: Any, listener: str,
                                                            greeting: bytes,
                                                            closing: bytes) -> None:
    """A byte every 0.3 s keeps an idle timer alive forever; the deadline (1.5 s from
    connect) closes the connection long before the 200 bytes are through."""
    if listener == "xmpp":
        drip = (b"<?xml version='1.0'?><stream:stream to='cx.example' xmlns='jabber:client' "
                b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>" + b" " * 100)
    else:
        drip = b"a NOOP " * 40 if listener == "imap" else b"NOOP " * 40
    sent, said = await trickle(server.ports[listener], greeting, drip)
    assert closing in said, said
    assert sent < len(drip)
    assert server.services.metrics.get("connections_preauth_timeout_total",
                                       listener=listener) == 1


async def test_the_deadline_does_not_touch_logged_in_sessions(server: Any) -> None:
    import imaplib

    await server.services.directory.add_unit("finance", "市财政局")
    await server.services.directory.add_user("zhang.san", "finance", "张三",
                                             password="Str0ng-pass!")

    def session() -> str:
        m = imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=client_tls())
        m.login("zhang.san", "Str0ng-pass!")
        import time
        time.sleep(2.0)  # past the 1.5 s login deadline of imap/imaps? (imaps: default 60)
        typ, _ = m.noop()
        m.logout()
        return typ

    assert await asyncio.to_thread(session) == "OK"


STARTTLS = {
    "imap": [(b"", b"* OK"), (b"a STARTTLS\r\n", b"a OK")],
    "xmpp": [(b"<?xml version='1.0'?><stream:stream to='cx.example' xmlns='jabber:client' "
              b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
              b"</stream:features>"),
             (b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", b"<proceed")],
    "submission": [(b"", b"220 "), (b"EHLO x\r\n", b"250 "), (b"STARTTLS\r\n", b"220 ")],
}


@pytest.mark.parametrize("listener", ["imaps", "xmpps", "submissions",
                                      "imap", "xmpp", "submission"])
async def test_failed_tls_handshake_is_one_quiet_line(server: Any, listener: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    r, w = await asyncio.open_connection("127.0.0.1", server.ports[listener])
    for send, expect in STARTTLS.get(listener, []):  # STARTTLS first, then garbage
        w.write(send)
        got = b""
        while expect not in got:
            chunk = await asyncio.wait_for(r.read(4096), 10)
            assert chunk, got
            got += chunk
    w.write(b"GET / HTTP/1.0\r\n\r\n" + b"\x16\x03\x01\x00\x05hello" * 4)
    await read_all(r)
    w.close()
    await asyncio.sleep(0.2)
    no_tracebacks(caplog)
    tls_lines = [r for r in caplog.records if "tls" in r.getMessage().lower()
                 and r.name.startswith("cxgw")]
    assert len(tls_lines) <= 1 and all(r.levelno == logging.INFO for r in tls_lines)
    if listener != "submissions":  # asyncio's own implicit TLS reports nothing to us
        assert len(tls_lines) == 1
    assert server.services.metrics.get("smtp_internal_errors_total") == 0


async def test_cut_off_bodies_are_quiet(server: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A client that goes away in the middle of DATA, an IMAP literal or an HTTP body costs
    at most one INFO line and no internal error."""
    caplog.set_level(logging.DEBUG)
    # SMTP DATA, cut off
    r, w = await asyncio.open_connection("127.0.0.1", server.ports["smtp"])
    for line, expect in ((b"", b"220"), (b"EHLO x\r\n", b"250 "),
                         (b"MAIL FROM:<a@example.org>\r\n", b"250"),
                         (b"RCPT TO:<postmaster@cx.example>\r\n", b""),
                         (b"DATA\r\n", b"")):
        w.write(line)
        if expect:
            got = b""
            while expect not in got:
                got += await asyncio.wait_for(r.read(4096), 10)
    w.write(b"Subject: half\r\n\r\nhalf a mess")
    await w.drain()
    w.close()
    # an IMAP literal, cut off
    r, w = await asyncio.open_connection("127.0.0.1", server.ports["imap"])
    await r.readline()
    w.write(b"a LOGIN {20}\r\n")
    await r.readline()
    w.write(b"0123456789")
    await w.drain()
    w.close()
    # an HTTP body, cut off
    r, w = await asyncio.open_connection("127.0.0.1", server.ports["http"])
    w.write(b"PUT /upload/x/y HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
    await w.drain()
    w.close()
    await asyncio.sleep(0.5)
    no_tracebacks(caplog)
    assert server.services.metrics.get("smtp_internal_errors_total") == 0


@pytest.mark.parametrize("cfg_overrides", [{
    "xmpp": {"components": ["bot.cx.example=s3cret"]},
    "listen": {"xmpp_component": "127.0.0.1:0"},
    "limits": {"xmpp_component_max_per_ip": 1, "xmpp_component_preauth_seconds": 1.0}}])
async def test_component_port_is_capped_and_has_a_handshake_deadline(server: Any) -> None:
    port = server.ports["xmpp_component"]
    r1, w1 = await asyncio.open_connection("127.0.0.1", port)  # holds the one slot
    await asyncio.sleep(0.1)
    r2, w2 = await asyncio.open_connection("127.0.0.1", port)
    refused = await read_all(r2)
    w2.close()
    assert b"<policy-violation" in refused, refused
    # the holder never says anything: closed at the deadline with connection-timeout
    said = await read_all(r1)
    w1.close()
    assert b"connection-timeout" in said, said
    metrics = server.services.metrics
    assert metrics.get("connections_refused_total", listener="xmpp_component",
                       reason="per-ip") == 1
    assert metrics.get("connections_preauth_timeout_total", listener="xmpp_component") == 1
