"""The HTTP front end against the running server (issue 12 item 3): upload links on the
https listener, a PUT refused on its token before its 20 MB body is read (8 at once do not
grow the server), a stalled body cut off with 408, 404 for unknown paths with a body."""

from __future__ import annotations

import asyncio
import os
import ssl
import urllib.error
import urllib.request
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from tests.netutil import free_port

from .test_xmpp import DOMAIN, TIMEOUT

pytestmark = pytest.mark.integration

UP = "urn:xmpp:http:upload:0"
BIG = 20 << 20



@pytest.fixture
def cfg_overrides() -> dict[str, dict[str, object]]:
    # Slot URLs name the listeners, so they need known ports here.
    return {"auth": {"scram_iterations": 4096},
            "listen": {"http": f"127.0.0.1:{free_port()}", "https": f"127.0.0.1:{free_port()}"},
            "http": {"body_timeout": 1.0, "header_timeout": 2.0}}


def client_tls() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the self-signed test certificate
    return ctx


def http(method: str, url: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT, context=client_tls()) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def slot(c: Any, size: int) -> tuple[str, str, str]:
    iq = c.make_iq_get(ito=f"upload.{DOMAIN}")
    iq.append(ET.fromstring(f"<request xmlns='{UP}' filename='a.bin' size='{size}' "
                            "content-type='application/octet-stream'/>"))
    res = await iq.send(timeout=TIMEOUT)
    put = res.xml.find(f"{{{UP}}}slot/{{{UP}}}put")
    get = res.xml.find(f"{{{UP}}}slot/{{{UP}}}get")
    return put.get("url"), put.find(f"{{{UP}}}header").text, get.get("url")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def raw(port: int, tls: bool = False) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, ssl=client_tls() if tls else None)


async def test_upload_links_are_https_and_serve_the_file(xmpp: Any) -> None:
    zhang = await xmpp.connect("zhang.san/desk")
    body = os.urandom(300_000)
    put_url, auth, get_url = await slot(zhang, len(body))
    assert put_url.startswith(f"https://127.0.0.1:{xmpp.ports['https']}/upload/")
    assert get_url == put_url
    assert (await asyncio.to_thread(http, "PUT", put_url, body, {"Authorization": auth}))[0] == 201
    assert await asyncio.to_thread(http, "GET", get_url) == (200, body)
    plain = get_url.replace(f"https://127.0.0.1:{xmpp.ports['https']}",
                            f"http://127.0.0.1:{xmpp.ports['http']}")
    assert await asyncio.to_thread(http, "GET", plain) == (200, body)  # same routes on both
    assert (await asyncio.to_thread(http, "GET", get_url.replace("/upload/", "/nope/")))[0] == 404


async def refused_put(port: int, path: str, auth: str, tls: bool = True) -> tuple[bytes, int]:
    """PUT a 20 MB body, writing it while watching for an answer; returns the answer and
    how many body bytes the client could write before it came (the server reads none)."""
    reader, writer = await raw(port, tls=tls)
    writer.write(f"PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
                 f"Content-Length: {BIG}\r\n\r\n".encode())
    answer = asyncio.ensure_future(reader.read(4096))
    chunk = b"\0" * 65536
    sent = 0
    try:
        while sent < BIG and not answer.done():
            writer.write(chunk)
            sent += len(chunk)
            drain = asyncio.ensure_future(writer.drain())
            await asyncio.wait([drain, answer], return_when=asyncio.FIRST_COMPLETED)
            if not drain.done():
                drain.cancel()  # the server stopped reading: the answer is what we wait for
                break
            if drain.exception() is not None:
                break  # the server closed the connection after answering
    except (ConnectionError, OSError):
        pass
    data = await asyncio.wait_for(answer, TIMEOUT)
    writer.close()
    return data, sent


async def test_upload_refused_on_its_token_before_the_body_is_read(xmpp: Any) -> None:
    zhang = await xmpp.connect("zhang.san/desk")
    put_url, _auth, _ = await slot(zhang, BIG - 1)
    path = put_url.split(str(xmpp.ports["https"]), 1)[1]
    before = rss()
    peak = before
    results: list[tuple[bytes, int]] = []

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss())
            await asyncio.sleep(0.01)

    sampler = asyncio.ensure_future(sample())
    try:
        results = await asyncio.gather(*(refused_put(xmpp.ports["https"], path, "Bearer wrong")
                                         for _ in range(8)))
    finally:
        sampler.cancel()
    for data, sent in results:
        assert data.startswith(b"HTTP/1.1 403 "), data[:60]
        assert sent < BIG  # answered while the body was still coming
    # The old parser buffered each body before the check: 8 x 20 MB = +171 MB measured.
    assert peak - before < 40 << 20, f"server grew by {(peak - before) >> 20} MB"
    # A token for no slot: 404, also before reading.
    data, _ = await refused_put(xmpp.ports["https"], "/upload/" + "A" * 32 + "/f", "Bearer x")
    assert data.startswith(b"HTTP/1.1 404 ")


async def test_stalled_upload_body_times_out(xmpp: Any) -> None:
    zhang = await xmpp.connect("zhang.san/desk")
    put_url, auth, _ = await slot(zhang, 1000)
    path = put_url.split(str(xmpp.ports["https"]), 1)[1]
    reader, writer = await raw(xmpp.ports["https"], tls=True)
    writer.write(f"PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
                 "Content-Length: 1000\r\n\r\n".encode() + b"x" * 400)  # then nothing
    data = await asyncio.wait_for(reader.read(), TIMEOUT)
    assert data.startswith(b"HTTP/1.1 408 ")
    writer.close()
    # The slot is still unused: a complete PUT afterwards succeeds.
    status, _ = await asyncio.to_thread(http, "PUT", put_url, b"y" * 1000, {"Authorization": auth})
    assert status == 201


async def test_stalled_head_times_out_and_unknown_path_with_body_is_404(xmpp: Any) -> None:
    for port, tls in ((xmpp.ports["http"], False), (xmpp.ports["https"], True)):
        reader, writer = await raw(port, tls)
        writer.write(b"POST /no/such/path HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
                     + b"z" * 5000)
        data = await asyncio.wait_for(reader.read(), TIMEOUT)
        assert data.startswith(b"HTTP/1.1 404 ")
        writer.close()
    reader, writer = await raw(xmpp.ports["http"])
    writer.write(b"GET /health HTTP/1.1\r\nHo")  # and never the rest
    data = await asyncio.wait_for(reader.read(), TIMEOUT)
    assert data.startswith(b"HTTP/1.1 408 ")
    writer.close()
    # keep-alive on the healthy path: two requests on one connection
    reader, writer = await raw(xmpp.ports["https"], True)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n"
                 b"Connection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), TIMEOUT)
    assert data.count(b"HTTP/1.1 200 ") == 2
    writer.close()
