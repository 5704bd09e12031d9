"""The HTTP front end (router + h11 driver) over in-memory streams: routing and refusals
decided from the head alone, bodies bounded and read only by who asks, keep-alive,
timeouts, and a bounded fuzz. No sockets: a StreamReader fed by the test, a writer fake
that collects bytes (the driver's interface to asyncio)."""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.http import HTTPServer, Limits, Request, Response


class FakeWriter:
    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        return None

    def get_extra_info(self, name: str) -> Any:
        return ("192.0.2.7", 4711) if name == "peername" else None


def responses(raw: bytes) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """Parse what the server wrote with an h11 client (keep-alive aware)."""
    c = h11.Connection(h11.CLIENT)
    out: list[tuple[int, dict[bytes, bytes], bytes]] = []
    c.receive_data(raw)
    status, headers, body = 0, {}, b""
    eof = False
    while True:
        if c.our_state is h11.IDLE:  # h11 wants the matching request sent first
            c.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
            c.send(h11.EndOfMessage())
        ev = c.next_event()
        if ev is h11.NEED_DATA and not eof:
            c.receive_data(b"")
            eof = True
            continue
        if isinstance(ev, h11.Response):
            status, headers, body = ev.status_code, dict(ev.headers), b""
        elif isinstance(ev, h11.Data):
            body += ev.data
        elif isinstance(ev, h11.EndOfMessage):
            out.append((status, headers, body))
            if c.our_state is h11.DONE and c.their_state is h11.DONE and c.trailing_data[0]:
                c.start_next_cycle()
            else:
                break
        elif isinstance(ev, h11.InformationalResponse):
            continue
        else:
            break
    return out


def server(limits: Limits | None = None) -> tuple[HTTPServer, list[Request]]:
    seen: list[Request] = []
    srv = HTTPServer(limits or Limits(header_timeout=1, body_timeout=0.2, idle_timeout=0.2))

    async def hello(req: Request) -> Response:
        seen.append(req)
        return Response(200, b"hello\n")

    async def echo(req: Request) -> Response:  # buffered route: body read by the driver
        seen.append(req)
        return Response(200, req.body)

    async def guarded(req: Request) -> Response:  # streaming route: token first
        seen.append(req)
        if req.headers.get("authorization") != "Bearer ok":
            return Response(403, b"forbidden\n")
        n = 0
        async for chunk in req.chunks():
            n += len(chunk)
        return Response(201, f"{n}\n".encode())

    srv.route("/hello", hello)
    srv.route("/echo", echo, methods=("POST",), max_body=1000)
    srv.route("/put/", guarded, methods=("PUT",), max_body=50 << 20, stream=True)
    return srv, seen


async def run(srv: HTTPServer, data: bytes, eof: bool = True,
              reader: asyncio.StreamReader | None = None) -> tuple[FakeWriter, asyncio.StreamReader]:
    reader = reader or asyncio.StreamReader(limit=1 << 30)
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    writer = FakeWriter()
    await asyncio.wait_for(srv.handle_connection(reader, writer), 10)  # type: ignore[arg-type]
    return writer, reader


async def test_keep_alive_routes_and_404() -> None:
    srv, seen = server()
    w, _ = await run(srv, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
                          b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                          b"GET /hello/sub?a=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    got = responses(bytes(w.out))
    assert [s for s, _, _ in got] == [200, 404, 200]
    assert seen[1].path == "/hello/sub" and seen[1].query == {"a": ["1"]}
    assert w.closed


async def test_unknown_path_with_a_body_is_404_and_the_body_is_not_read() -> None:
    srv, seen = server()
    body = b"x" * 2_000_000
    w, reader = await run(srv, b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: "
                          + str(len(body)).encode() + b"\r\n\r\n" + body)
    [(status, headers, _)] = responses(bytes(w.out))
    assert status == 404 and headers[b"connection"] == b"close"
    assert len(reader._buffer) > len(body) - 2 * 65536  # type: ignore[attr-defined]
    assert not seen


async def test_token_is_checked_before_the_body_is_read() -> None:
    srv, seen = server()
    body = b"y" * 3_000_000
    w, reader = await run(srv, b"PUT /put/f HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer no\r\n"
                          b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    [(status, headers, _)] = responses(bytes(w.out))
    assert status == 403 and headers[b"connection"] == b"close"
    unread = len(reader._buffer)  # type: ignore[attr-defined]
    assert unread > len(body) - 2 * 65536  # the server read less than two chunks


async def test_authorised_streaming_body_and_chunked() -> None:
    srv, _ = server()
    body = b"z" * 300_000
    w, _ = await run(srv, b"PUT /put/f HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ok\r\n"
                     b"Content-Length: 300000\r\n\r\n" + body
                     + b"PUT /put/g HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ok\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    got = responses(bytes(w.out))
    assert [(s, b) for s, _, b in got] == [(201, b"300000\n"), (201, b"5\n")]


async def test_expect_100_continue_only_when_the_handler_reads() -> None:
    srv, _ = server()
    head = (b"PUT /put/f HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: 4\r\nAuthorization: Bearer %s\r\n\r\n")
    w, _ = await run(srv, head % b"no")
    assert b"100 Continue" not in w.out and b" 403 " in w.out
    w, _ = await run(srv, head % b"ok" + b"abcd")
    assert w.out.startswith(b"HTTP/1.1 100 ") and b" 201 " in w.out


async def test_bounds_413_405_and_buffered_body() -> None:
    srv, seen = server()
    w, _ = await run(srv, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
    assert responses(bytes(w.out))[0][0] == 413
    w, _ = await run(srv, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + b"".join(b"3e8\r\n" + b"a" * 1000 + b"\r\n" for _ in range(2)) + b"0\r\n\r\n")
    assert responses(bytes(w.out))[0][0] == 413  # chunked past max_body, counted as it comes
    w, _ = await run(srv, b"DELETE /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    [(status, headers, _)] = responses(bytes(w.out))
    assert status == 405 and headers[b"allow"] == b"GET"
    w, _ = await run(srv, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    assert responses(bytes(w.out))[0][2] == b"abc"
    w, _ = await run(srv, b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    assert responses(bytes(w.out))[0][0] == 405


async def test_huge_header_is_431_and_garbage_is_400() -> None:
    srv, _ = server(Limits(max_header=2048, idle_timeout=0.2, header_timeout=1))
    w, _ = await run(srv, b"GET /hello HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 5000 + b"\r\n\r\n")
    assert w.out.startswith(b"HTTP/1.1 431 ")
    w, _ = await run(srv, b"\x16\x03\x01 hello tls\r\n\r\n")
    assert w.out.startswith(b"HTTP/1.1 400 ")


async def test_stalled_body_and_stalled_head_time_out() -> None:
    srv, _ = server()
    reader = asyncio.StreamReader()
    w, _ = await run(srv, b"PUT /put/f HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ok\r\n"
                     b"Content-Length: 100\r\n\r\nonly-a-bit", eof=False, reader=reader)
    assert w.out.startswith(b"HTTP/1.1 408 ") and w.closed
    reader = asyncio.StreamReader()
    w, _ = await run(srv, b"GET /hello HTTP/1.1\r\nHo", eof=False, reader=reader)
    assert w.out.startswith(b"HTTP/1.1 408 ")
    reader = asyncio.StreamReader()
    w, _ = await run(srv, b"", eof=False, reader=reader)  # idle: closed without a word
    assert w.out == b"" and w.closed


async def test_head_has_length_but_no_body() -> None:
    srv, _ = server()
    w, _ = await run(srv, b"HEAD /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert w.out.endswith(b"\r\n\r\n") and b"Content-Length: 6" in w.out


FRAGMENTS = [b"GET ", b"PUT ", b"POST ", b"/hello", b"/put/x", b"/echo", b" HTTP/1.1\r\n",
             b"Host: x\r\n", b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n",
             b"Authorization: Bearer ok\r\n", b"Expect: 100-continue\r\n", b"\r\n", b"abc",
             b"3\r\nabc\r\n0\r\n\r\n", b"\x00", b":", b" ", b"Content-Length: -1\r\n"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=12)), max_size=25))
def test_fuzz_the_driver_never_raises_and_always_speaks_http(parts: list[bytes]) -> None:
    async def go() -> FakeWriter:
        srv, _ = server(Limits(header_timeout=0.05, body_timeout=0.05, idle_timeout=0.05))
        w, _ = await run(srv, b"".join(parts))
        return w
    w = asyncio.run(go())
    assert w.closed
    assert w.out == b"" or w.out.startswith(b"HTTP/1.1 ")
    assert b" 500 " not in w.out[:12]
