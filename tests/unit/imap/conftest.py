"""Fake link for driving the sans-IO IMAP core with bytes (no sockets)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mailrelay.imap.proto import (
    NEED_DATA,
    CommandReceived,
    ConnectionClosed,
    Event,
    ImapServerCore,
    SessionState,
    Tagged,
)
from mailrelay.imap.store_api import MessageRow
from mailrelay.mime import normalize_crlf, parse_message


class Link:
    """Client side of a fake link: ``send`` bytes, get events and server bytes back."""

    def __init__(self, core: ImapServerCore | None = None) -> None:
        self.core = core or ImapServerCore()

    def send(self, data: bytes) -> list[Any]:
        self.core.receive_data(data)
        events: list[Any] = []
        while (ev := self.core.next_event()) is not NEED_DATA:
            assert isinstance(ev, Event)
            events.append(ev)
            if isinstance(ev, ConnectionClosed):
                break
        return events

    def command(self, line: bytes):
        """Send one line, expect exactly one parsed command back."""
        evs = self.send(line + b"\r\n")
        assert len(evs) == 1 and isinstance(evs[0], CommandReceived), (evs, self.out())
        return evs[0].command

    def out(self) -> bytes:
        return self.core.data_to_send()

    def login(self) -> None:
        cmd = self.command(b"L1 LOGIN alice secret")
        self.core.send(Tagged(cmd.tag, "OK", "Logged in"))
        self.out()
        assert self.core.state is SessionState.AUTHENTICATED

    def select(self) -> None:
        self.login()
        cmd = self.command(b"S1 SELECT INBOX")
        self.core.send(Tagged(cmd.tag, "OK", "selected", "READ-WRITE"))
        self.out()
        assert self.core.state is SessionState.SELECTED


@pytest.fixture
def link() -> Link:
    return Link()


def make_row(raw: bytes, uid: int = 1, flags=(), size=None, date=None, modseq=1) -> MessageRow:
    raw = normalize_crlf(raw)
    return MessageRow(
        uid=uid,
        flags=frozenset(flags),
        modseq=modseq,
        internaldate=date or datetime(2024, 1, 15, 10, 0, tzinfo=UTC),
        size=len(raw) if size is None else size,
        structure=parse_message(raw),
        raw=raw,
    )
