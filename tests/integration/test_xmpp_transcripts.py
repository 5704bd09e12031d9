"""The transcripts of ``tests/unit/xmpp/transcripts`` against the real server, over
STARTTLS with a raw client (the sans-IO client core on asyncio streams)."""

from __future__ import annotations

import asyncio
import secrets
import ssl
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import pytest

from tests.unit.xmpp import transcript
from xmpp.jid import JID
from xmpp.proto.client import ClientSession
from xmpp.proto.events import StanzaToClient, StartTLSRequested, StreamEnded

pytestmark = pytest.mark.integration

PASSWORD = "Secret-pass-123"


def _ctx() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # self-signed test certificate
    return ctx


class RawActor:
    def __init__(self) -> None:
        self.session: ClientSession | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.stanzas: list[Element] = []
        self._last: object = None
        self._tls = False

    async def login(self, port: int, jid: JID) -> None:
        s = self.session = ClientSession(jid, PASSWORD, new_nonce=lambda: secrets.token_urlsafe(18))
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        s.start()
        self.writer.write(s.data_to_send())
        while s.bound_jid is None:
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            s.receive_data(data)
            self._events()
            if isinstance(self._last, StreamEnded) or not data:
                raise AssertionError(f"login of {jid} failed")
            if self._tls:
                self._tls = False
                await self.writer.drain()
                await self.writer.start_tls(_ctx())
                s.tls_started()
            self.writer.write(s.data_to_send())

    def _events(self) -> None:
        assert self.session is not None
        while (ev := self.session.next_event()) is not None:
            self._last = ev
            if isinstance(ev, StartTLSRequested):
                self._tls = True
            elif isinstance(ev, StanzaToClient):
                self.stanzas.append(ev.element)

    async def send(self, xml: str) -> None:
        assert self.writer is not None
        self.writer.write(xml.encode())
        await self.writer.drain()

    async def pull(self, timeout: float) -> list[Element]:
        assert self.reader is not None and self.session is not None
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except TimeoutError:
            data = None
        if data:
            self.session.receive_data(data)
            self._events()
        out, self.stanzas = self.stanzas, []
        return out


@pytest.mark.parametrize("path", transcript.all_transcripts(), ids=lambda p: p.stem)
async def test_transcript_on_real_server(server: Any, path: Path) -> None:
    d = server.services.directory
    await d.add_unit("finance", "财政局")
    await d.add_unit("health", "卫生健康委员会")
    for local, unit, name, title in (("zhang.san", "finance", "张三", "科长"),
                                     ("li.si", "finance", "李四", ""),
                                     ("wang.wu", "health", "王五", ""),
                                     ("zhao.liu", "health", "赵六", "")):
        await d.add_user(local, unit, name, title=title, password=PASSWORD)
    await asyncio.sleep(0.3)  # the XMPP directory snapshot follows directory_changed
    t = transcript.load(path)
    actors: dict[str, transcript.Actor] = {}
    raws: list[RawActor] = []
    try:
        for name, jid in t.actors.items():
            local, _, resource = jid.partition("/")
            raw = RawActor()
            raws.append(raw)
            await raw.login(server.ports["xmpp"], JID(local, "cx.example", resource))
            actors[name] = transcript.Actor(raw.send, raw.pull)
        await transcript.run(t, actors, timeout=5.0)
    finally:
        for raw in raws:
            if raw.writer is not None:
                raw.writer.close()
