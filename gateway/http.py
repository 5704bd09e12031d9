"""The HTTP/1.1 front end (health, metrics, CRL/OCSP, file upload, and whatever components
register): a small router plus a connection driver on h11, the sans-IO HTTP/1.1 library.

Components register routes by path prefix (``HTTPServer.route``). A request is routed, and
its method checked, from the request head alone; the body is never read before that. A
route is either *buffered* (the driver reads a body of at most ``max_body`` bytes before
the handler runs: fine for small public bodies like OCSP) or *streaming* (``stream=True``:
the handler decides, e.g. checks a token, and only then reads the body with
``await req.read(n)`` / ``req.chunks()``, still bounded by ``max_body``). A handler that
answers without reading the body gets its connection closed afterwards (nothing of the
body is ever buffered). ``Expect: 100-continue`` is answered only when a handler reads.

Bounds (config section ``http``): the request line and headers at most ``max_header`` bytes
(431) received within ``header_timeout`` seconds of the request's first byte (a trickle
does not extend it); a body that sends nothing for ``body_timeout`` seconds is cut off
(408); a keep-alive connection waits ``idle_timeout`` for its next request. Unknown paths
get 404 whatever the method or body. The same router serves the ``http`` and ``https``
listeners; ``Request.scheme`` tells which.

A handler may switch protocols (WebSocket, RFC 6455 §4.2.2): it returns a 101 Response
with ``upgrade`` set; after the 101 goes out, the driver hands the raw reader, writer and
the bytes already received to that callback and forgets the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import h11

log = logging.getLogger("cxgw.http")

MAX_HEADER = 16 * 1024
READ_SIZE = 65536
REASONS = {100: "Continue", 101: "Switching Protocols", 200: "OK", 201: "Created",
           204: "No Content", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
           413: "Content Too Large", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass(frozen=True)
class Limits:
    """Timeouts (seconds) and sizes of one listener (config section ``http``)."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 60.0
    max_header: int = MAX_HEADER


class BodyTooLarge(Exception):
    """The body exceeds the route's ``max_body`` (answered 413)."""


class BodyTimeout(Exception):
    """The client stopped sending the body (answered 408)."""


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]          # lower-case names; repeated fields joined with ", "
    body: bytes = b""                # buffered routes only (streaming: use read/chunks)
    peer: str = ""
    scheme: str = "http"
    _read: Callable[[int], Awaitable[bytes]] | None = field(default=None, repr=False)

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("content-length", "")
        return int(value) if value.isdigit() else None

    async def read(self, n: int = READ_SIZE) -> bytes:
        """Up to `n` bytes of the body; b"" at its end. Raises BodyTooLarge / BodyTimeout."""
        if self._read is None:
            return b""
        return await self._read(n)

    async def chunks(self) -> AsyncIterator[bytes]:
        while chunk := await self.read():
            yield chunk

    async def read_all(self) -> bytes:
        """The whole body (bounded by the route's ``max_body``)."""
        return b"".join([c async for c in self.chunks()])


Upgrade = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[None]]


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    # A streamed body of `length` bytes instead of `body` (e.g. a file).
    stream: AsyncIterator[bytes] | None = None
    length: int | None = None
    upgrade: Upgrade | None = None   # with status 101: takes over the connection


Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class Route:
    prefix: str
    methods: tuple[str, ...]
    handler: Handler
    max_body: int = 0
    stream: bool = False   # the handler reads the body itself (after its own checks)


class Router:
    """Routes by longest path prefix; registered by components before the listeners start."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, route: Route) -> None:
        if any(r.prefix == route.prefix for r in self.routes):
            raise ValueError(f"HTTP route {route.prefix} registered twice")
        self.routes.append(route)
        self.routes.sort(key=lambda r: len(r.prefix), reverse=True)

    def find(self, path: str) -> Route | None:
        for r in self.routes:
            if path == r.prefix or path.startswith(r.prefix.rstrip("/") + "/") or (
                    r.prefix.endswith("/") and path.startswith(r.prefix)):
                return r
        return None


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, (text + "\n").encode(), headers=headers or {})


class HTTPServer:
    """The router shared by the ``http`` and ``https`` listeners, and the connection driver."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.router = Router()
        self.limits = limits or Limits()

    @property
    def routes(self) -> list[Route]:
        return self.router.routes

    def route(self, prefix: str, handler: Handler, methods: tuple[str, ...] = ("GET",),
              max_body: int = 0, stream: bool = False) -> None:
        self.router.add(Route(prefix, methods, handler, max_body, stream))

    def connection_handler(self, scheme: str
                           ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                         Awaitable[None]]:
        """The accept callback of a listener (``asyncio.start_server``)."""
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self.handle_connection(reader, writer, scheme)
        return accept

    async def handle_connection(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter, scheme: str = "http") -> None:
        """One accepted connection, for its whole life. The accept path of every HTTP
        listener comes through here: a connection limiter check goes at its top."""
        peer_info = writer.get_extra_info("peername")
        peer = f"{peer_info[0]}:{peer_info[1]}" if peer_info else ""
        conn = _Connection(self, reader, writer, peer, scheme)
        try:
            await conn.serve()
        except Exception:  # one bad request never takes the listener down; our bug
            log.exception("http connection from %s failed", peer)
        finally:
            if not conn.upgraded:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()


class _Closed(Exception):
    """The peer went away, or the connection must end now (nothing more to send)."""


class _Connection:
    """Drives one h11.Connection over asyncio streams."""

    def __init__(self, server: HTTPServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, peer: str, scheme: str) -> None:
        self.server = server
        self.limits = server.limits
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.scheme = scheme
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header)
        self.upgraded = False
        self._body_left = 0          # bytes the route still allows
        self._body_done = False

    async def serve(self) -> None:
        while True:
            try:
                event = await self._next_head()
            except _Closed:
                return
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                await self._send_error(status if status in REASONS else 400, "bad request")
                return
            if isinstance(event, h11.ConnectionClosed):
                return
            assert isinstance(event, h11.Request)
            keep = await self._handle(event)
            if not keep or self.upgraded:
                return
            if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
                self.h11.start_next_cycle()
            else:
                return

    # -- input ------------------------------------------------------------------------------

    async def _receive(self, timeout: float) -> None:
        try:
            data = await asyncio.wait_for(self.reader.read(READ_SIZE), max(timeout, 0.001))
        except TimeoutError:  # an OSError subclass: not a closed connection
            raise
        except (ConnectionError, OSError) as exc:
            raise _Closed from exc
        self.h11.receive_data(data)  # b"" is EOF, which h11 turns into ConnectionClosed

    async def _next_head(self) -> h11.Request | h11.ConnectionClosed:
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        taken = len(self.h11.trailing_data[0])  # bytes of this head (and perhaps beyond)
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                if deadline is None and self.h11.trailing_data[0]:
                    deadline = loop.time() + self.limits.header_timeout
                if deadline is None:
                    timeout = self.limits.idle_timeout  # waiting for a request to begin
                else:
                    timeout = deadline - loop.time()
                before = len(self.h11.trailing_data[0])
                try:
                    await self._receive(timeout)
                    taken += len(self.h11.trailing_data[0]) - before
                except TimeoutError:
                    if deadline is not None:  # a head begun but not finished in time
                        log.info("http request head from %s timed out", self.peer)
                        await self._send_error(408, "request timeout")
                    raise _Closed from None
                if deadline is None:
                    deadline = loop.time() + self.limits.header_timeout
                continue
            if isinstance(event, h11.Request):
                # h11 bounds an incomplete head; a complete one that came in one read is
                # measured here (what was taken minus what is left for the body).
                if taken - len(self.h11.trailing_data[0]) > self.limits.max_header:
                    raise h11.RemoteProtocolError("head too large", error_status_hint=431)
                return event
            if isinstance(event, h11.ConnectionClosed):
                return event
            raise h11.RemoteProtocolError("unexpected event", error_status_hint=400)

    async def _read_body(self, n: int) -> bytes:
        """Up to `n` bytes of the current request body (b"" at its end)."""
        if self._body_done:
            return b""
        if self.h11.they_are_waiting_for_100_continue:
            self._write(self.h11.send(h11.InformationalResponse(status_code=100, headers=[])))
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                try:
                    await self._receive(self.limits.body_timeout)
                except TimeoutError:
                    raise BodyTimeout from None
                except _Closed:
                    raise BodyTimeout from None
                continue
            if isinstance(event, h11.Data):
                data = bytes(event.data)
                self._body_left -= len(data)
                if self._body_left < 0:
                    raise BodyTooLarge
                return data  # what arrived (at most READ_SIZE), whatever `n` asked
            if isinstance(event, h11.EndOfMessage):
                self._body_done = True
                return b""
            if isinstance(event, h11.ConnectionClosed):
                raise BodyTimeout  # cut off mid-body
            raise h11.RemoteProtocolError("unexpected event in body", error_status_hint=400)

    # -- one request --------------------------------------------------------------------------

    async def _handle(self, event: h11.Request) -> bool:
        method = event.method.decode("ascii", "replace")
        target = event.target.decode("ascii", "replace")
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("ascii", "replace")
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        url = urlsplit(target)
        path = unquote(url.path)
        self._body_done = False
        has_body = "transfer-encoding" in headers or headers.get("content-length", "0") != "0"
        self._body_left = 0
        if not has_body:
            await self._read_body(0)  # h11's EndOfMessage; no byte is read from the network
        route = self.server.router.find(path)
        # Route and method are decided from the head alone; no body byte is read yet.
        if route is None:
            return await self._answer(_text(404, "not found"))
        if method not in route.methods and not (method == "HEAD" and "GET" in route.methods):
            return await self._answer(_text(405, "method not allowed",
                                            {"Allow": ", ".join(route.methods)}))
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > route.max_body:
            return await self._answer(_text(413, "body too large"))
        if has_body and route.max_body == 0:
            return await self._answer(_text(413, "no body accepted here"))
        self._body_left = route.max_body
        req = Request(method, path, parse_qs(url.query), headers, peer=self.peer,
                      scheme=self.scheme, _read=self._read_body)
        try:
            if not route.stream and has_body:
                req.body = await req.read_all()
            resp = await route.handler(req)
        except BodyTooLarge:
            return await self._answer(_text(413, "body too large"))
        except BodyTimeout:
            log.info("http body from %s cut off or timed out (%s %s)", self.peer, method, path)
            return await self._answer(_text(408, "request body timeout"))
        except Exception:
            log.exception("http handler %s failed", route.prefix)
            resp = _text(500, "internal error")
        if method == "HEAD":
            n = resp.length if resp.length is not None else len(resp.body)
            await _close_stream(resp)
            resp = Response(resp.status, b"", resp.content_type,
                            {**resp.headers, "Content-Length": str(n or 0)})
        return await self._answer(resp)

    async def _answer(self, resp: Response) -> bool:
        """Send `resp`; True if the connection may carry another request. A body left
        unread (refused before reading it) is never drained: the connection closes."""
        close = not self._body_done
        if resp.status == 101 and resp.upgrade is not None:
            return await self._switch(resp)
        hdrs = {"Content-Type": resp.content_type, **resp.headers}
        if "Content-Length" not in hdrs:
            hdrs["Content-Length"] = str(resp.length if resp.stream is not None
                                         else len(resp.body))
        if close:
            hdrs["Connection"] = "close"
        try:
            self._write(self.h11.send(h11.Response(
                status_code=resp.status, reason=REASONS.get(resp.status, "Status").encode(),
                headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in hdrs.items()])))
            if resp.stream is not None:
                try:
                    async for chunk in resp.stream:
                        self._write(self.h11.send(h11.Data(data=chunk)))
                        await self.writer.drain()
                finally:
                    await _close_stream(resp)
            elif resp.body:
                self._write(self.h11.send(h11.Data(data=resp.body)))
            self._write(self.h11.send(h11.EndOfMessage()))
            await self.writer.drain()
        except (ConnectionError, OSError):
            return False
        return not close and self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE

    async def _switch(self, resp: Response) -> bool:
        hdrs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers.items()]
        self._write(self.h11.send(h11.InformationalResponse(status_code=101, headers=hdrs)))
        await self.writer.drain()
        data, _closed = self.h11.trailing_data
        self.upgraded = True
        assert resp.upgrade is not None
        await resp.upgrade(self.reader, self.writer, bytes(data))
        return False

    async def _send_error(self, status: int, text: str) -> None:
        """An error before a request could be routed (a bad or late head); the connection
        ends after it. Written directly: h11 has no request to answer in these states."""
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = (text + "\n").encode()
        self._write(f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
                    f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}"
                    "\r\nConnection: close\r\n\r\n".encode() + body)
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.drain()

    def _write(self, data: bytes | None) -> None:
        if data:
            self.writer.write(data)


async def _close_stream(resp: Response) -> None:
    """Let a streamed body release what it holds (an open file), sent or not."""
    close = getattr(resp.stream, "aclose", None)
    if close is not None:
        await close()
