"""Conversation transcripts (Prosody ``spec/scansion`` style), written once and run both
against the router and features over fakes (``test_xmpp_transcripts``) and against the
real server over TLS (``tests/integration/test_xmpp_transcripts``).

Format::

    # comment
    [zhang] zhang.san/desk        an actor: bound as that JID before the first step
    zhang sends:                  the XML that follows (until a blank line) is sent
    <message to="li.si@cx.example" type="chat"><body>hi</body></message>

    li receives:                  a stanza matching this one must arrive
    <message from="zhang.san@cx.example/desk" type="chat"><body>hi</body></message>

A received stanza matches when the tag is the same, every expected attribute has the
expected value ("{any}": present), expected text is equal and every expected child
matches one of its children. Stanzas that match nothing stay queued for later steps.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from xml.etree.ElementTree import Element, fromstring

from xmpp.proto.serializer import to_string

DIR = Path(__file__).parent / "transcripts"


@dataclass(frozen=True)
class Step:
    actor: str
    action: str  # "sends" | "receives"
    xml: str


@dataclass(frozen=True)
class Transcript:
    name: str
    actors: dict[str, str]  # name -> "local/resource"
    steps: list[Step]


def load(path: Path) -> Transcript:
    actors: dict[str, str] = {}
    steps: list[Step] = []
    current: tuple[str, str] | None = None
    buf: list[str] = []

    def flush() -> None:
        nonlocal current
        if current is not None:
            steps.append(Step(current[0], current[1], "\n".join(buf).strip()))
        current = None
        buf.clear()

    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("#"):
            continue
        if not line:
            flush()
        elif line.startswith("[") and current is None:
            name, _, jid = line[1:].partition("]")
            actors[name.strip()] = jid.strip()
        elif current is None and line.endswith(":") and " " in line:
            who, _, action = line[:-1].partition(" ")
            if action not in ("sends", "receives"):
                raise ValueError(f"{path.name}: unknown action in {line!r}")
            current = (who, action)
        else:
            buf.append(raw)
    flush()
    return Transcript(path.stem, actors, steps)


def all_transcripts() -> list[Path]:
    return sorted(DIR.glob("*.scn"))


def parse(xml: str) -> Element:
    return fromstring(f"<w xmlns='jabber:client'>{xml}</w>")[0]


def matches(expected: Element, got: Element) -> bool:
    if expected.tag != got.tag:
        return False
    for key, value in expected.attrib.items():
        if value == "{any}":
            if key not in got.attrib:
                return False
        elif got.get(key) != value:
            return False
    text = (expected.text or "").strip()
    if text and (got.text or "").strip() != text:
        return False
    return all(any(matches(child, g) for g in got) for child in expected)


class Actor:
    """What a runner provides per actor: send XML text, and the stanzas received."""

    def __init__(self, send: Callable[[str], Awaitable[None]],
                 pull: Callable[[float], Awaitable[list[Element]]]) -> None:
        self.send = send
        self.pull = pull  # wait up to `timeout` for more stanzas (may return none)
        self.queue: list[Element] = []

    async def expect(self, xml: str, timeout: float) -> Element:
        expected = parse(xml)
        waited = -0.2  # always pull at least once
        while True:
            for i, el in enumerate(self.queue):
                if matches(expected, el):
                    return self.queue.pop(i)
            if waited >= timeout:
                seen = "\n".join(to_string(e) for e in self.queue) or "(nothing)"
                raise AssertionError(f"expected:\n{xml}\nreceived:\n{seen}")
            self.queue.extend(await self.pull(0.2))
            waited += 0.2


async def run(t: Transcript, actors: dict[str, Actor], timeout: float) -> None:
    for step in t.steps:
        actor = actors[step.actor]
        if step.action == "sends":
            await actor.send(step.xml)
        else:
            await actor.expect(step.xml, timeout)
