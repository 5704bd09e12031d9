"""HTTP File Upload (XEP-0363, ``urn:xmpp:http:upload:0``) at ``upload.<domain>``.

A local user asks the service for a slot (filename, size, content type); the service
checks the per-file limit and the user's quota (files kept plus open slots), records the
slot in PostgreSQL and answers with a PUT URL and a GET URL on the HTTP listeners (the
``https`` one when configured): ``<base>/upload/<token>/<filename>``. The PUT must carry
``Authorization: Bearer <secret>`` from the slot (XEP-0363 §4 header) and exactly the
announced size; slot, secret and size are checked from the request head, *before* a byte
of the body is read (the body is streamed to ``<state_dir>/upload/<token>.part``, never
held in memory, then renamed). GET (and HEAD) serve it to anyone holding the
URL, with the announced content type (only media and plain text inline; ``nosniff`` and a
sandboxing CSP always). A periodic sweep (`gateway.maintenance`, running whatever
listeners are on) drops slots never used within ``SLOT_TTL``, files older than the expiry
and ``.part`` leftovers of interrupted writes.

The HTTP side has no dependency on the gateway: the wiring registers the route and hands
each request to the bus point ``upload/http`` (``HttpRequest`` with a ``read`` callable for
the body → ``HttpReply``, whose body may be a stream), and
provides ``UploadSettings`` at ``upload/settings``; with no settings the service is off.
``upload/sweep`` (payload: a datetime "now", or None) runs an expiry sweep at once and
returns the number of entries removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import mimetypes
import os
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.etree.ElementTree import Element, SubElement

from ...host import Host
from ...proto import ns
from ...proto.errors import StanzaError, error_reply
from ...router import Resource
from ...stanzas import iq_result
from .repo import UploadStore

log = logging.getLogger("cxgw.xmpp.upload")

NS = "urn:xmpp:http:upload:0"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
XDATA = "jabber:x:data"
PATH = "/upload/"
SLOT_TTL = 300.0             # seconds an unused slot is kept
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,64}$")
_MIME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")
INLINE = ("image/", "audio/", "video/", "text/plain")
READ_CHUNK = 256 * 1024      # bytes per read of a file or body


@dataclass(frozen=True)
class UploadSettings:
    directory: Path                    # <state_dir>/upload
    base_url: str = ""                 # "http://host:port" of the `http` listener
    max_file_size: int = 20 << 20      # bytes per file (the route's max_body)
    quota: int = 500 << 20             # bytes per user (files kept + open slots)
    expiry: float = 30 * 86400.0       # seconds a file is kept
    domain: str = ""                   # service JID; "" → upload.<domain>


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    headers: dict[str, str]           # lower-case names
    body: bytes = b""                 # used when `read` is None (tests, small bodies)
    read: Callable[[int], Awaitable[bytes]] | None = None  # the body, chunk by chunk

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.read is None:
            if self.body:
                yield self.body
            return
        while chunk := await self.read(READ_CHUNK):
            yield chunk


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    stream: AsyncIterator[bytes] | None = None   # instead of `body`: `length` bytes
    length: int | None = None


def _text(status: int, text: str) -> HttpReply:
    return HttpReply(status, (text + "\n").encode())


def safe_filename(name: str) -> str:
    """The last path component, without control characters, at most 200 characters."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip().strip(".")
    return name[:200] or "file"


class Upload:
    def __init__(self, host: Host, settings: UploadSettings, store: UploadStore) -> None:
        self.host = host
        self.s = settings
        self.store = store
        self.jid = settings.domain or f"upload.{host.domain}"

    # -- XMPP side ----------------------------------------------------------------------------

    def on_stanza(self, stanza: Element, origin: Resource) -> None:
        """Router component handler for everything addressed to the service."""
        if stanza.tag == ns.IQ and stanza.get("type") in ("get", "set"):
            origin.run(lambda: self._iq(stanza, origin))
        elif stanza.tag == ns.MESSAGE and stanza.get("type") != "error":
            origin.deliver(error_reply(stanza, StanzaError("service-unavailable")))

    async def _iq(self, stanza: Element, origin: Resource) -> None:
        child = stanza[0] if len(stanza) else None
        try:
            if child is None:
                raise StanzaError("bad-request")
            if stanza.get("type") == "get" and child.tag == f"{{{DISCO_INFO}}}query":
                reply = self._disco_info(stanza)
            elif stanza.get("type") == "get" and child.tag == f"{{{DISCO_ITEMS}}}query":
                reply = iq_result(stanza, Element(f"{{{DISCO_ITEMS}}}query"))
            elif stanza.get("type") == "get" and child.tag == f"{{{NS}}}request":
                reply = await self._slot(stanza, child, origin)
            else:
                raise StanzaError("service-unavailable")
        except StanzaError as exc:
            reply = error_reply(stanza, exc)
        origin.deliver(reply)

    def _disco_info(self, stanza: Element) -> Element:
        if stanza[0].get("node"):
            raise StanzaError("item-not-found")
        q = Element(f"{{{DISCO_INFO}}}query")
        SubElement(q, f"{{{DISCO_INFO}}}identity",
                   {"category": "store", "type": "file", "name": "HTTP File Upload"})
        for feature in (DISCO_INFO, DISCO_ITEMS, NS):
            SubElement(q, f"{{{DISCO_INFO}}}feature", {"var": feature})
        x = SubElement(q, f"{{{XDATA}}}x", {"type": "result"})
        ft = SubElement(x, f"{{{XDATA}}}field", {"var": "FORM_TYPE", "type": "hidden"})
        SubElement(ft, f"{{{XDATA}}}value").text = NS
        mx = SubElement(x, f"{{{XDATA}}}field", {"var": "max-file-size"})
        SubElement(mx, f"{{{XDATA}}}value").text = str(self.s.max_file_size)
        return iq_result(stanza, q)

    async def _slot(self, stanza: Element, req: Element, origin: Resource) -> Element:
        if not self.host.router.account_exists(origin.bare):
            raise StanzaError("forbidden", "Only local users may upload")
        filename = safe_filename(req.get("filename") or "")
        size_text = req.get("size") or ""
        if not size_text.isdigit() or int(size_text) <= 0:
            raise StanzaError("bad-request", "size must be a positive integer")
        size = int(size_text)
        if size > self.s.max_file_size:
            # XEP-0363 §5: not-acceptable with <file-too-large/> naming the limit.
            reply = error_reply(stanza, StanzaError("not-acceptable", "File too large",
                                                    type="modify"))
            err = reply.find(ns.ERROR)
            assert err is not None
            big = SubElement(err, f"{{{NS}}}file-too-large")
            SubElement(big, f"{{{NS}}}max-file-size").text = str(self.s.max_file_size)
            return reply
        ctype = (req.get("content-type") or "").strip().lower()
        if not _MIME.match(ctype):
            ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        token = secrets.token_urlsafe(24)
        secret = secrets.token_urlsafe(24)
        if not await self.store.add(token, origin.bare, filename, size, ctype, secret,
                                    self.s.quota):
            raise StanzaError("resource-constraint", "Quota reached", type="wait")
        url = f"{self.s.base_url.rstrip('/')}{PATH}{token}/{quote(filename, safe='')}"
        slot = Element(f"{{{NS}}}slot")
        put = SubElement(slot, f"{{{NS}}}put", {"url": url})
        SubElement(put, f"{{{NS}}}header", {"name": "Authorization"}).text = f"Bearer {secret}"
        SubElement(slot, f"{{{NS}}}get", {"url": url})
        return iq_result(stanza, slot)

    # -- HTTP side ----------------------------------------------------------------------------

    def _file(self, token: str) -> Path:
        return self.s.directory / token

    async def on_http(self, req: Any) -> HttpReply:
        parts = req.path.split("/")
        token = parts[2] if len(parts) >= 3 else ""
        if not _TOKEN.match(token):
            return _text(404, "not found")
        slot = await self.store.slot(token)
        if slot is None:
            return _text(404, "not found")
        if req.method == "PUT":
            return await self._put(req, slot)
        if slot.uploaded is None or self._expired(slot.created):
            return _text(404, "not found")
        inline = slot.content_type.startswith(INLINE)
        disposition = "inline" if inline else "attachment"
        path = self._file(token)
        try:
            size = (await asyncio.to_thread(os.stat, path)).st_size
        except FileNotFoundError:
            return _text(404, "not found")
        return HttpReply(200, b"", slot.content_type, length=size,
                         stream=None if req.method == "HEAD" else _file_chunks(path, size),
                         headers={
            "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(slot.filename)}",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "public, max-age=86400, immutable",
        })

    def _expired(self, created: datetime) -> bool:
        return created < datetime.now(UTC) - timedelta(seconds=self.s.expiry)

    async def _put(self, req: Any, slot: Any) -> HttpReply:
        auth = req.headers.get("authorization", "")
        if not hmac.compare_digest(auth.encode(), f"Bearer {slot.put_secret}".encode()):
            return _text(403, "forbidden")
        if slot.uploaded is not None:
            return _text(403, "already uploaded")
        if slot.created < datetime.now(UTC) - timedelta(seconds=SLOT_TTL):
            return _text(403, "slot expired")
        declared = req.headers.get("content-length")
        if declared is not None and declared != str(slot.size):
            return _text(400, f"expected {slot.size} bytes")
        # Authorised: only now is the body read, streamed to a part file.
        path = self._file(slot.token)
        part = path.with_suffix(".part")
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True, mode=0o700)
        fh = await asyncio.to_thread(open, part, "wb")
        got = 0
        try:
            async for chunk in req.chunks():
                got += len(chunk)
                if got > slot.size:
                    break
                await asyncio.to_thread(fh.write, chunk)
        except BaseException:
            await asyncio.to_thread(_discard, fh, part)
            raise
        if got != slot.size:
            await asyncio.to_thread(_discard, fh, part)
            return _text(400, f"expected {slot.size} bytes")
        await asyncio.to_thread(_finish, fh, part, path)
        if not await self.store.mark_uploaded(slot.token):
            return _text(403, "already uploaded")
        return _text(201, "created")

    # -- expiry --------------------------------------------------------------------------------

    async def sweep(self, now: datetime | None = None) -> int:
        return await expire_files(self.store, self.s.directory, self.s.expiry, now)


async def expire_files(store: UploadStore, directory: Path, expiry: float,
                       now: datetime | None = None) -> int:
    """Drop slots never used within SLOT_TTL and files older than `expiry` seconds, rows
    and files alike (run periodically by `gateway.maintenance`, on any node)."""
    now = now or datetime.now(UTC)
    tokens = await store.expire(now - timedelta(seconds=SLOT_TTL), now - timedelta(seconds=expiry))
    for token in tokens:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, directory / token)
    if tokens:
        log.info("upload sweep removed %d slots/files", len(tokens))
    return len(tokens)


def remove_partials(directory: Path, older_than: float) -> int:
    """Delete `.part` files (an upload cut short: disk full, a crash mid-write) older than
    `older_than` seconds; a write in progress is younger. Blocking: run in a thread."""
    import time
    cutoff = time.time() - older_than
    n = 0
    if not directory.is_dir():
        return 0
    for part in directory.glob("*.part"):
        try:
            if part.stat().st_mtime < cutoff:
                part.unlink()
                n += 1
        except FileNotFoundError:
            pass
    return n


def _discard(fh: Any, part: Path) -> None:
    fh.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(part)


def _finish(fh: Any, part: Path, path: Path) -> None:
    fh.flush()
    os.fsync(fh.fileno())
    fh.close()
    os.replace(part, path)


async def _file_chunks(path: Path, size: int) -> AsyncIterator[bytes]:
    """`size` bytes of a file, read in a thread chunk by chunk (opened on first use)."""
    fh = await asyncio.to_thread(open, path, "rb")
    try:
        left = size
        while left > 0:
            chunk = await asyncio.to_thread(fh.read, min(READ_CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
        if left > 0:  # the file shrank under us: pad so the framing stays right
            yield b"\0" * left
    finally:
        await asyncio.to_thread(fh.close)


def register(host: Host) -> None:
    store = host.stores.upload

    async def start() -> None:
        settings = await host.bus.fire("upload/settings", None)
        if settings is None or store is None:
            return  # not wired (no http listener or no database): no service
        u = Upload(host, settings, store)
        host.router.components[u.jid] = u.on_stanza
        host.hooks.on("disco/host/items", lambda: [(u.jid, "HTTP File Upload")])
        host.bus.on("upload/http", u.on_http)
        # payload: the time to sweep as of (or None); the periodic sweep is gateway.maintenance
        host.bus.on("upload/sweep", u.sweep)

    host.on_start(start)
