"""Local servers for the load harness tests, each on 127.0.0.1 port 0 in a background loop.

- an aiosmtpd sink that rejects `reject4*` (450) and `reject5*` (550) recipients and keeps
  what it accepted per mailbox;
- a tiny IMAP4rev1 responder over those mailboxes (LOGIN, SELECT, NOOP, UID SEARCH,
  UID FETCH, LOGOUT), enough for the harness's end-to-end verification;
- raw misbehaving SMTP servers (drop the connection after DATA, never answer DATA).

The harness runs its own event loop in the test thread, as `cxgw load` would.
"""

from __future__ import annotations

import asyncio
import base64
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session


class SinkHandler:
    def __init__(self, pipelining: bool = False) -> None:
        self.pipelining = pipelining
        self.transactions: list[tuple[str, list[str], bytes]] = []
        self.mailboxes: dict[str, list[bytes]] = defaultdict(list)

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        local = address.split("@", 1)[0]
        if local.startswith("reject5"):
            return "550 5.1.1 no such user"
        if local.startswith("reject4"):
            return "450 4.2.1 mailbox busy"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.transactions.append((str(envelope.mail_from), list(envelope.rcpt_tos), content))
        for r in envelope.rcpt_tos:
            self.mailboxes[r.lower()].append(content)
        return "250 2.0.0 OK"


class FakeImap(asyncio.Protocol):
    """Serves `SinkHandler.mailboxes` read-only; UIDs are 1-based list positions."""

    def __init__(self, boxes: dict[str, list[bytes]]) -> None:
        self.boxes = boxes
        self.user = ""
        self.buf = b""
        self.stores = 0

    def connection_made(self, transport: Any) -> None:
        self.t = transport
        transport.write(b"* OK fake IMAP4rev1 ready\r\n")

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n" in self.buf:
            line, self.buf = self.buf.split(b"\r\n", 1)
            self.t.write(self.reply(line.decode()))

    def reply(self, line: str) -> bytes:
        tag, _, rest = line.partition(" ")
        cmd = rest.upper()
        box = self.boxes.get(self.user, [])
        if cmd.startswith("LOGIN"):
            self.user = rest.split()[1].strip('"').lower()
            return f"{tag} OK logged in\r\n".encode()
        if cmd.startswith(("SELECT", "NOOP")):
            extra = f"* OK [UIDNEXT {len(box) + 1}]\r\n" if cmd.startswith("SELECT") else ""
            return f"* {len(box)} EXISTS\r\n{extra}{tag} OK done\r\n".encode()
        if cmd.startswith("UID SEARCH"):
            m = re.search(r"UID (\d+):\*", rest)
            lo = int(m.group(1)) if m else 1
            needle = rest.split()[-1].encode()
            uids = [i + 1 for i, msg in enumerate(box) if i + 1 >= lo and needle in msg]
            return f"* SEARCH {' '.join(map(str, uids))}\r\n{tag} OK done\r\n".encode()
        if cmd.startswith("AUTHENTICATE PLAIN"):
            self.user = base64.b64decode(rest.split()[-1]).split(b"\0")[1].decode().lower()
            return f"{tag} OK authenticated\r\n".encode()
        if cmd.startswith("UID STORE"):
            self.stores += 1
            return f"{tag} OK stored\r\n".encode()
        if cmd.startswith("UID FETCH"):
            out = b""
            uset = rest.split()[2]
            uids = list(range(1, len(box) + 1)) if ":" in uset else [int(u) for u in uset.split(",")]
            for u in uids:
                msg = box[u - 1]
                if "RFC822.SIZE" in cmd:
                    out += b"* %d FETCH (UID %d FLAGS () RFC822.SIZE %d)\r\n" % (u, u, len(msg))
                    continue
                if "BODY.PEEK[]" in cmd:
                    lit = msg
                else:
                    hdr = re.search(rb"^X-Load-Id: .*\r\n", msg, re.M | re.I)
                    lit = (hdr.group(0) if hdr else b"") + b"\r\n"
                out += b"* %d FETCH (UID %d BODY[] {%d}\r\n%s)\r\n" % (u, u, len(lit), lit)
            return out + f"{tag} OK done\r\n".encode()
        if cmd.startswith("LOGOUT"):
            return f"* BYE\r\n{tag} OK bye\r\n".encode()
        return f"{tag} BAD unknown\r\n".encode()


class DropAfterData(asyncio.Protocol):
    """Accepts everything, then closes the connection instead of answering the final dot."""

    def connection_made(self, transport: Any) -> None:
        self.t = transport
        self.in_data = False
        self.buf = b""
        transport.write(b"220 drop ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.in_data:
            if b"\r\n.\r\n" in self.buf:
                self.t.abort()
            return
        while b"\r\n" in self.buf and not self.in_data:
            line, self.buf = self.buf.split(b"\r\n", 1)
            if line.upper().startswith(b"EHLO"):
                self.t.write(b"250-drop\r\n250 8BITMIME\r\n")
            elif line.upper().startswith(b"DATA"):
                self.t.write(b"354 go\r\n")
                self.in_data = True
                self.buf = b"\r\n" + self.buf
            else:
                self.t.write(b"250 OK\r\n")


class Servers:
    """A background event loop hosting the test servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[asyncio.AbstractServer] = []

    def start(self, factory: Callable[[], asyncio.BaseProtocol]) -> int:
        async def go() -> int:
            srv = await self.loop.create_server(factory, "127.0.0.1", 0)
            self.servers.append(srv)
            return int(srv.sockets[0].getsockname()[1])

        return asyncio.run_coroutine_threadsafe(go(), self.loop).result(5)

    def close(self) -> None:
        async def stop() -> None:
            for s in self.servers:
                s.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def servers() -> Iterator[Servers]:
    s = Servers()
    yield s
    s.close()


@pytest.fixture
def sink(servers: Servers) -> tuple[SinkHandler, int]:
    handler = SinkHandler()
    return handler, servers.start(lambda: SMTP(handler, hostname="sink"))


@pytest.fixture
def pipelining_sink(servers: Servers) -> tuple[SinkHandler, int]:
    handler = SinkHandler(pipelining=True)
    return handler, servers.start(lambda: SMTP(handler, hostname="sink"))


class HangAfterData(DropAfterData):
    """Never answers the final dot (and never closes)."""

    def data_received(self, data: bytes) -> None:
        if not self.in_data:
            super().data_received(data)
