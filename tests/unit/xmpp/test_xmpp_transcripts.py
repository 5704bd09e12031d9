"""Transcripts run against the router and features over fakes (no sockets)."""

from __future__ import annotations

from pathlib import Path
from xml.etree.ElementTree import Element

import pytest

from . import transcript
from .fakes import FakeSession, World


def _actor(w: World, s: FakeSession) -> transcript.Actor:
    async def send(xml: str) -> None:
        await w.send(s, xml)

    async def pull(_timeout: float) -> list[Element]:
        await w.drain()
        return s.take()

    return transcript.Actor(send, pull)


@pytest.mark.parametrize("path", transcript.all_transcripts(), ids=lambda p: p.stem)
async def test_transcript_on_fakes(path: Path) -> None:
    t = transcript.load(path)
    w = await World().start()
    actors = {}
    for name, jid in t.actors.items():
        local, _, resource = jid.partition("/")
        actors[name] = _actor(w, await w.login(local, resource, presence=False))
    await transcript.run(t, actors, timeout=0.0)
