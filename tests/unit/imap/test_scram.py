"""AUTHENTICATE SCRAM-SHA-256 / SCRAM-SHA-1 (RFC 5802, RFC 7677) over IMAP continuations."""

from __future__ import annotations

import base64

import pytest

from directory.scram import client_proof
from mailrelay.imap.proto import ImapServerCore, SessionState
from mailrelay.imap.session import ImapSession

from .fakestore import FakeScramAuth, FakeStore
from .test_session import Client


class ScramClient(Client):
    def __init__(self, tls: bool = True) -> None:
        self.store = FakeStore()
        self.auth = FakeScramAuth()
        self.core = ImapServerCore()
        self.session = ImapSession(self.core, self.store, self.auth, tls=tls)
        self.session.greeting()
        self.greeting = self.core.data_to_send()

    async def scram(self, mech: str, user: str, password: str, *, ir: bool = True,
                    authzid: str = "") -> str:
        """Run the exchange as a client; returns the last server output."""
        nonce = "fyko+d2lbbFgONRv9qkxdawL"
        gs2 = f"n,{'a=' + authzid if authzid else ''},"
        first_bare = f"n={user},r={nonce}"
        first = base64.b64encode((gs2 + first_bare).encode()).decode()
        if ir:
            out = await self.cmd(f"a AUTHENTICATE {mech} {first}")
        else:
            assert await self.cmd(f"a AUTHENTICATE {mech}") == "+ \r\n"
            out = await self.cmd(first)
        if not out.startswith("+ "):
            return out
        server_first = base64.b64decode(out[2:].strip()).decode()
        assert server_first.startswith("r=" + nonce)
        without_proof = f"c={base64.b64encode(gs2.encode()).decode()},r={server_first[2:].split(',')[0]}"
        proof, sig = client_proof(mech, password, first_bare, server_first, without_proof)
        out = await self.cmd(base64.b64encode(f"{without_proof},p={proof}".encode()).decode())
        if not out.startswith("+ "):
            return out
        assert base64.b64decode(out[2:].strip()).decode() == "v=" + sig  # server proved itself
        return await self.cmd("")


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
@pytest.mark.parametrize("ir", [True, False])
async def test_scram_login(mech: str, ir: bool) -> None:
    c = ScramClient()
    out = await c.scram(mech, "alice", "secret", ir=ir)
    assert out.startswith("a OK [CAPABILITY"), out
    assert c.session.user == "alice" and c.core.state is SessionState.AUTHENTICATED
    assert c.auth.records == [("alice", True)]
    assert "b OK" in await c.cmd("b SELECT INBOX")


async def test_scram_wrong_password_counts_toward_lockout() -> None:
    c = ScramClient()
    out = await c.scram("SCRAM-SHA-256", "alice", "wrong")
    assert out.startswith("a NO [AUTHENTICATIONFAILED]"), out
    assert c.auth.records == [("alice", False)]
    assert c.core.state is SessionState.NOT_AUTHENTICATED
    assert (await c.scram("SCRAM-SHA-256", "alice", "secret")).startswith("a OK")


async def test_scram_unknown_user_fails_at_the_proof() -> None:
    c = ScramClient()
    out = await c.scram("SCRAM-SHA-256", "mallory", "secret")
    assert out.startswith("a NO [AUTHENTICATIONFAILED]")
    assert c.auth.records == []


async def test_scram_authzid_of_someone_else_is_refused() -> None:
    c = ScramClient()
    out = await c.scram("SCRAM-SHA-256", "alice", "secret", authzid="bob")
    assert out.startswith("a NO [AUTHENTICATIONFAILED]")


async def test_scram_garbage_and_cancel() -> None:
    c = ScramClient()
    out = await c.cmd("a AUTHENTICATE SCRAM-SHA-256 " + base64.b64encode(b"p=tls,,n=x,r=y").decode())
    assert out.startswith("a NO [AUTHENTICATIONFAILED]")  # channel binding not offered
    assert await c.cmd("b AUTHENTICATE SCRAM-SHA-1") == "+ \r\n"
    assert (await c.cmd("*")).startswith("b BAD")
    assert (await c.cmd("c NOOP")).startswith("c OK")


async def test_scram_advertised_only_after_tls() -> None:
    c = ScramClient(tls=False)
    assert b"AUTH=SCRAM" not in c.greeting and b"LOGINDISABLED" in c.greeting
    out = await c.cmd("a AUTHENTICATE SCRAM-SHA-256")
    assert out.startswith("a NO [PRIVACYREQUIRED]")
    c.session.tls_started()
    caps = await c.cmd("b CAPABILITY")
    assert "AUTH=SCRAM-SHA-256 AUTH=SCRAM-SHA-1 AUTH=PLAIN" in caps and "SASL-IR" in caps
    # an authenticator without SCRAM support advertises PLAIN only
    plain = Client()
    assert b"AUTH=PLAIN" in plain.greeting and b"AUTH=SCRAM" not in plain.greeting
