"""A fake link joining a ClientSession and a ServerSession: bytes move in memory, a fake
driver answers the server's requests from an in-memory directory. No sockets."""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field

from directory.sasl import CheckProof
from directory.scram import ScramKeys, check_password, derive_keys
from xmpp.jid import JID
from xmpp.proto.client import ClientSession
from xmpp.proto.config import SessionConfig
from xmpp.proto.events import (
    AuthRequested,
    BindRequested,
    PlainCredentials,
    SessionEvent,
    StartTLSRequested,
)
from xmpp.proto.session import ServerSession

DOMAIN = "example.com"
HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>")

_KEYS: dict[tuple[str, str], ScramKeys] = {}


def keys_for(mechanism: str, password: str) -> ScramKeys:
    """Stored keys, cached (PBKDF2 with few iterations to keep the tests fast)."""
    key = (mechanism, password)
    if key not in _KEYS:
        _KEYS[key] = derive_keys(mechanism, password, salt=b"0123456789abcdef", iterations=64)
    return _KEYS[key]


@dataclass
class FakeDirectory:
    passwords: dict[str, str] = field(default_factory=lambda: {"juliet": "r0m30!", "romeo": "j"})
    taken: set[str] = field(default_factory=set)  # resources that conflict

    def keys(self, mechanism: str, username: str) -> ScramKeys | None:
        password = self.passwords.get(username)
        return keys_for(mechanism, password) if password is not None else None


@dataclass
class Link:
    server: ServerSession
    client: ClientSession
    directory: FakeDirectory = field(default_factory=FakeDirectory)
    auto: bool = True  # answer the server's requests immediately
    server_events: list[SessionEvent] = field(default_factory=list)
    client_events: list[SessionEvent] = field(default_factory=list)
    pending: list[SessionEvent] = field(default_factory=list)  # unanswered when not auto
    chunk: int = 0  # deliver bytes in pieces of this size (0: as produced)

    def _deliver(self, to: ServerSession | ClientSession, data: bytes) -> None:
        if not self.chunk:
            to.receive_data(data)
            return
        for i in range(0, len(data), self.chunk):
            to.receive_data(data[i:i + self.chunk])

    def answer(self, event: SessionEvent) -> None:
        """What a real driver does for a server event (directory lookups, binding)."""
        server = self.server
        if isinstance(event, AuthRequested) and isinstance(event.work, CheckProof):
            server.proof_checked(True)
        elif isinstance(event, AuthRequested):
            keys = self.directory.keys(event.mechanism, event.username)
            if keys is None:  # unknown: keys no password matches, as the directory does
                keys = derive_keys(event.mechanism, "no such user", b"u" * 16, 64)
            server.provide_scram_keys(keys)
        elif isinstance(event, PlainCredentials):
            keys = self.directory.keys("SCRAM-SHA-256", event.username)
            server.auth_result(keys is not None and check_password(keys, event.password))
        elif isinstance(event, BindRequested):
            if event.resource in self.directory.taken:
                server.bind_conflict()
            else:
                assert server.username is not None and server.domain is not None
                server.bound(JID(server.username, server.domain, event.resource))

    def pump(self, rounds: int = 50) -> None:
        for _ in range(rounds):
            moved = False
            data = self.client.data_to_send()
            if data:
                moved = True
                self._deliver(self.server, data)
            tls = False
            while (ev := self.server.next_event()) is not None:
                self.server_events.append(ev)
                if isinstance(ev, StartTLSRequested):
                    tls = True
                elif self.auto:
                    self.answer(ev)
                else:
                    self.pending.append(ev)
            data = self.server.data_to_send()
            if data:
                moved = True
                self._deliver(self.client, data)
            if tls:
                self.server.tls_started()
            while (ev := self.client.next_event()) is not None:
                self.client_events.append(ev)
                if isinstance(ev, StartTLSRequested):
                    self.client.tls_started()
            if not moved and not self.client._out and not self.server._out:
                return


def make_link(user: str = "juliet", password: str = "r0m30!", resource: str = "balcony", *,
              mechanisms: tuple[str, ...] = ("SCRAM-SHA-256",), direct_tls: bool = False,
              config: SessionConfig | None = None, auto: bool = True,
              require_tls: bool = True) -> Link:
    config = config or SessionConfig(domains=(DOMAIN,), direct_tls=direct_tls)
    jid = JID(user, DOMAIN, resource)
    client = ClientSession(jid, password, mechanisms=mechanisms, direct_tls=direct_tls,
                           require_tls=require_tls, new_nonce=lambda: secrets.token_urlsafe(18))
    ids = itertools.count(1)
    link = Link(ServerSession(config, new_id=lambda: f"stream-id-{next(ids)}"), client,
                auto=auto)
    client.start()
    return link


def events_of(events: list[SessionEvent], kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]
