"""A small HTTP/1.1 listener for health, metrics, CRL/OCSP and file upload.

Routes are registered by prefix by the components that need them. Requests are bounded:
headers at most 16 KB, bodies at most the route's `max_body` (413 above), Content-Length
required for bodies (411), keep-alive honoured, idle connections closed after 60 s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger("cxgw.http")

MAX_HEADER = 16 * 1024
REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 411: "Length Required",
           413: "Content Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""
    peer: str = ""


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class Route:
    prefix: str
    methods: tuple[str, ...]
    handler: Handler
    max_body: int = 0


class HTTPServer:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def route(self, prefix: str, handler: Handler, methods: tuple[str, ...] = ("GET",),
              max_body: int = 0) -> None:
        self.routes.append(Route(prefix, methods, handler, max_body))
        self.routes.sort(key=lambda r: len(r.prefix), reverse=True)

    def _find(self, path: str) -> Route | None:
        for r in self.routes:
            if path == r.prefix or path.startswith(r.prefix.rstrip("/") + "/") or (
                    r.prefix.endswith("/") and path.startswith(r.prefix)):
                return r
        return None

    async def handle_connection(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        peer = str(writer.get_extra_info("peername"))
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    await self._send(writer, Response(400, b"header too large\n"), False)
                    return
                if len(head) > MAX_HEADER:
                    await self._send(writer, Response(400, b"header too large\n"), False)
                    return
                keep = await self._one(head, reader, writer, peer)
                if not keep:
                    return
        except (asyncio.IncompleteReadError, ConnectionError) as exc:  # the client's doing
            log.info("http connection from %s cut off: %s", peer, type(exc).__name__)
        except Exception:  # one bad request never takes the listener down
            log.exception("http connection from %s failed", peer)
        finally:
            writer.close()

    async def _one(self, head: bytes, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter, peer: str) -> bool:
        try:
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if line:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
        except ValueError:
            await self._send(writer, Response(400, b"bad request line\n"), False)
            return False
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        url = urlsplit(target)
        path = unquote(url.path)
        route = self._find(path)
        length = headers.get("content-length")
        if "transfer-encoding" in headers:
            await self._send(writer, Response(411, b"chunked bodies are not accepted\n"), False)
            return False
        body = b""
        if length:
            if not length.isdigit():
                await self._send(writer, Response(400, b"bad content-length\n"), False)
                return False
            n = int(length)
            if route is None or n > route.max_body:
                await self._send(writer, Response(413, b"body too large\n"), False)
                return False
            body = await reader.readexactly(n)
        if route is None:
            resp = Response(404, b"not found\n")
        elif method not in route.methods and not (method == "HEAD" and "GET" in route.methods):
            resp = Response(405, b"method not allowed\n", headers={"Allow": ", ".join(route.methods)})
        else:
            req = Request(method, path, parse_qs(url.query), headers, body, peer)
            try:
                resp = await route.handler(req)
            except Exception:
                log.exception("http handler %s failed", route.prefix)
                resp = Response(500, b"internal error\n")
            if method == "HEAD":
                resp = Response(resp.status, b"", resp.content_type,
                                {**resp.headers, "Content-Length": str(len(resp.body))})
        await self._send(writer, resp, keep)
        return keep

    async def _send(self, writer: asyncio.StreamWriter, resp: Response, keep: bool) -> None:
        hdrs = {"Content-Type": resp.content_type, "Content-Length": str(len(resp.body)),
                "Connection": "keep-alive" if keep else "close", **resp.headers}
        head = f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Status')}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        writer.write(head.encode("latin-1") + resp.body)
        await writer.drain()
