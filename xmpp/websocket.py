"""XMPP over WebSocket (RFC 7395) on the HTTP listeners: the same ``C2SConnection`` (session
core, SASL, rate limit, stanza limits, stream management) as TCP, behind a transport
adapter that speaks WebSocket frames (wsproto, sans-IO) and RFC 7395 framing
(``xmpp.proto.framing``) instead of raw bytes.

The HTTP front end (h11) reads the upgrade request; `handshake` checks it and names the
headers of the 101; after the 101 the front end hands over the raw streams to `serve`.
The WebSocket is treated like direct TLS by the core (no STARTTLS inside): on the https
listener it is TLS; the plain http listener is meant for a TLS-terminating proxy in front.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    TextMessage,
)
from wsproto.utilities import generate_accept_token

from .proto.errors import StreamError
from .proto.framing import FramingError, ServerFramer, client_message
from .proto.serializer import escape_attr
from .proto.session import ServerSession
from .server import C2SConnection, C2SServer, _new_id

log = logging.getLogger("cxgw.xmpp.ws")

PATH = "/xmpp-websocket"
SUBPROTOCOL = "xmpp"          # RFC 7395 §3.1
READ_SIZE = 65536
HIGH_WATER = 1 << 20          # bytes queued to a client before it counts as not reading
FRAMING_OVERHEAD = 1024       # an <open/> or a stanza's framing beyond the stanza limit


ALT_WEBSOCKET = "urn:xmpp:alt-connections:websocket"   # XEP-0156 §3
XRD = "http://docs.oasis-open.org/ns/xri/xrd-1.0"


def host_meta_xrd(urls: list[str]) -> bytes:
    """``/.well-known/host-meta`` (XEP-0156 §3.1, RFC 6415 XRD) naming the endpoints."""
    links = "".join(f'<Link rel="{ALT_WEBSOCKET}" href="{escape_attr(u)}"/>' for u in urls)
    return f"<?xml version='1.0' encoding='utf-8'?><XRD xmlns='{XRD}'>{links}</XRD>".encode()


def host_meta_json(urls: list[str]) -> bytes:
    """``/.well-known/host-meta.json`` (XEP-0156 §3.1, RFC 6415 JRD)."""
    return json.dumps({"links": [{"rel": ALT_WEBSOCKET, "href": u} for u in urls]}).encode()


def handshake(method: str, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    """Check a WebSocket upgrade request (RFC 6455 §4.2.1, RFC 7395 §3.1): (status,
    response headers, reason). Status 101 means: switch."""
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    if method != "GET" or headers.get("upgrade", "").lower() != "websocket" \
            or "upgrade" not in tokens:
        return 426, {"Upgrade": "websocket"}, "a WebSocket upgrade is required here"
    if headers.get("sec-websocket-version") != "13":  # RFC 6455 §4.4
        return 426, {"Sec-WebSocket-Version": "13"}, "WebSocket version 13 only"
    key = headers.get("sec-websocket-key", "")
    if not key:
        return 400, {}, "Sec-WebSocket-Key missing"
    offered = {p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")}
    if SUBPROTOCOL not in offered:
        # RFC 7395 §3.1: the "xmpp" sub-protocol must be negotiated.
        return 400, {}, "the xmpp WebSocket sub-protocol is required (RFC 7395)"
    return 101, {"Upgrade": "websocket", "Connection": "Upgrade",
                 "Sec-WebSocket-Accept": generate_accept_token(key.encode()).decode(),
                 "Sec-WebSocket-Protocol": SUBPROTOCOL}, ""


class WSTransport:
    """What a ``C2SConnection`` needs of an asyncio transport, over a WebSocket."""

    def __init__(self, conn: C2SConnection, writer: asyncio.StreamWriter,
                 max_message: int) -> None:
        self.conn = conn
        self.writer = writer
        self.ws = Connection(ConnectionType.SERVER)
        self.framer = ServerFramer()
        self.max_message = max_message
        self.readable = asyncio.Event()
        self.readable.set()
        self.closing = False
        self.lost = False
        self._text: list[str] = []
        self._size = 0

    # -- asyncio.Transport, as C2SConnection uses it ------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.writer.get_extra_info(name, default)

    def write(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            messages = self.framer.feed(data)
        except Exception:  # our own output: a bug, but one client must not take us down
            log.exception("unframeable core output")
            self.abort()
            return
        out = b"".join(self.ws.send(Message(data=m)) for m in messages)
        if out:
            self.writer.write(out)
        if self.get_write_buffer_size() > HIGH_WATER:
            self.conn.data["write-paused"] = True
        else:
            self.conn.data.pop("write-paused", None)

    def get_write_buffer_size(self) -> int:
        transport = self.writer.transport
        return int(transport.get_write_buffer_size()) if transport is not None else 0

    def is_closing(self) -> bool:
        return self.closing or self.writer.is_closing()

    def pause_reading(self) -> None:
        self.readable.clear()

    def resume_reading(self) -> None:
        self.readable.set()

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        with contextlib.suppress(Exception):
            if self.ws.state is ConnectionState.OPEN:
                self.writer.write(self.ws.send(CloseConnection(code=1000)))
        self.writer.close()
        self._lost()

    def abort(self) -> None:
        self.closing = True
        if self.writer.transport is not None:
            self.writer.transport.abort()
        self._lost()

    def _lost(self) -> None:
        if not self.lost:
            self.lost = True
            self.readable.set()
            self.conn.connection_lost(None)

    # -- input ----------------------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Bytes from the network: WebSocket frames → RFC 7395 messages → the connection."""
        self.ws.receive_data(data if data else None)
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                self._size += len(event.data)
                if self._size > self.max_message:
                    self.conn.close_stream(StreamError("policy-violation",
                                                       "WebSocket message too large"))
                    return
                self._text.append(event.data)
                if not event.message_finished:
                    continue
                text, self._text, self._size = "".join(self._text), [], 0
                try:
                    payload = client_message(text)
                except FramingError as exc:
                    log.info("bad RFC 7395 message from %s: %s", self.conn.peer, exc)
                    self.conn.close_stream(StreamError("not-well-formed"))
                    return
                self.conn.data_received(payload)
            elif isinstance(event, BytesMessage):
                # RFC 7395 §3.2: XMPP travels in text frames only.
                self.conn.close_stream(StreamError("unsupported-encoding",
                                                   "binary frames are not XMPP"))
                return
            elif isinstance(event, Ping):
                self.writer.write(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    with contextlib.suppress(Exception):
                        self.writer.write(self.ws.send(event.response()))
                self.closing = True
                self.writer.close()
                self._lost()
                return


async def serve(server: C2SServer, reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter, data: bytes) -> None:
    """One upgraded connection for its whole life."""
    conn = C2SConnection(server, direct_tls=False)
    # The core sees a secured stream (no STARTTLS inside a WebSocket, RFC 7395 §3.7).
    conn.session = ServerSession(server.config_direct, new_id=_new_id)
    cfg = server.host.cfg
    transport = WSTransport(conn, writer, cfg.max_stanza_size + FRAMING_OVERHEAD)
    conn.connection_made(transport)  # type: ignore[arg-type]
    try:
        if data:
            transport.receive(data)
        while not transport.lost:
            await transport.readable.wait()
            if transport.lost:
                break
            try:
                chunk = await reader.read(READ_SIZE)
            except (ConnectionError, OSError):
                chunk = b""
            transport.receive(chunk)
            if not chunk:
                break
    except Exception:
        log.exception("websocket connection from %s failed", conn.peer)
    finally:
        if not transport.lost:
            transport.abort()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
