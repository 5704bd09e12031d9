"""The one SASL module (directory.sasl): mechanisms, channel binding, and a bounded fuzz of
its parsers (any bytes in → a step out, never an exception)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxkernel.limiter import ConnectionLimiter, ListenerLimits, address_key
from directory.auth import network_of, penalty_delay
from directory.sasl import (
    MECHANISMS,
    Challenge,
    ChannelBinding,
    CheckPassword,
    CheckProof,
    Failure,
    NeedKeys,
    SaslServer,
    Success,
    offered,
)
from directory.scram import client_proof, derive_keys

CB = ChannelBinding("tls-server-end-point", b"\x01" * 32)
KEYS = {m: derive_keys(m, "secret", b"s" * 16, 64) for m in ("SCRAM-SHA-1", "SCRAM-SHA-256")}


def prepare(name: str) -> str:
    name = name.strip().lower()
    if not name or "/" in name:
        raise ValueError(name)
    return name if "@" in name else name + "@cx.example"


def run(mech: str, first: bytes | None, answers: list[bytes], *, password_ok: bool = True,
        binding: ChannelBinding | None = None) -> list[object]:
    """Drive an exchange with a trusting directory; return the steps seen."""
    s = SaslServer(mech, prepare=prepare, binding=binding, plus_offered=binding is not None)
    step = s.start(first)
    seen: list[object] = [step]
    for data in answers:
        while isinstance(step, CheckPassword | NeedKeys | CheckProof):
            if isinstance(step, CheckPassword):
                step = s.verdict(password_ok and step.password == "secret")
            elif isinstance(step, NeedKeys):
                step = s.keys(KEYS[step.mechanism])
            else:
                step = s.proof_result(s.check_proof())
            seen.append(step)
        if not isinstance(step, Challenge):
            break
        step = s.receive(data)
        seen.append(step)
    return seen


def test_plain_and_its_rules() -> None:
    assert run("PLAIN", b"\0Bob\0secret", [])[-1] == CheckPassword("bob@cx.example", "secret")
    assert run("PLAIN", b"bob@cx.example\0bob\0secret", [])[-1].username == "bob@cx.example"
    assert run("PLAIN", b"alice\0bob\0secret", [])[-1] == Failure("invalid-authzid")
    for bad in (b"bob\0secret", b"\0\0secret", b"\0bob\0", b"\0b\xffob\0pw", b"\0bob\0a\0b",
                b"\0bob\0pw\r\n", b"\0" + b"x" * 5000 + b"\0pw"):
        assert isinstance(run("PLAIN", bad, [])[-1], Failure), bad
    assert run("PLAIN", None, [b"\0bob\0secret"])[0] == Challenge(b"")


def test_login_mechanism() -> None:
    steps = run("LOGIN", None, [b"bob", b"secret"])
    assert steps[0] == Challenge(b"Username:") and steps[1] == Challenge(b"Password:")
    assert steps[-1] == CheckPassword("bob@cx.example", "secret")
    assert run("LOGIN", b"bob", [b"secret"])[-1] == CheckPassword("bob@cx.example", "secret")
    assert run("LOGIN", b"", [b"bob", b"x"])[0] == Challenge(b"Username:")


def scram(mech: str, *, flag: str = "n", cb_data: bytes = b"", password: str = "secret",
          binding: ChannelBinding | None = None, final_in_challenge: bool = False
          ) -> object:
    s = SaslServer(mech, prepare=prepare, binding=binding, plus_offered=binding is not None,
                   final_in_challenge=final_in_challenge)
    gs2 = f"{flag},,"
    bare = "n=bob,r=cnonce"
    step = s.start((gs2 + bare).encode())
    if not isinstance(step, NeedKeys):
        return step
    server_first = s.keys(KEYS[step.mechanism])
    assert isinstance(server_first, Challenge)
    nonce = server_first.data.decode().split(",")[0][2:]
    without = f"c={base64.b64encode(gs2.encode() + cb_data).decode()},r={nonce}"
    proof, sig = client_proof(step.mechanism, password, bare, server_first.data.decode(),
                              without)
    step = s.receive(f"{without},p={proof}".encode())
    if not isinstance(step, CheckProof):
        return step
    final = s.proof_result(s.check_proof())
    if isinstance(final, Challenge):  # IMAP/SMTP: server-final, then an empty response
        assert final.data == f"v={sig}".encode()
        return s.receive(b"")
    if isinstance(final, Success):
        assert final.data == f"v={sig}".encode()
    return final


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_scram(mech: str) -> None:
    assert isinstance(scram(mech), Success)
    assert isinstance(scram(mech, final_in_challenge=True), Success)
    assert scram(mech, password="wrong") == Failure("not-authorized")
    assert isinstance(scram(mech, flag="y"), Success)  # no -PLUS offered: "y" is fine
    assert scram(mech, flag="y", binding=CB) == Failure("malformed")  # downgrade (RFC 5802 §6)
    plus = mech + "-PLUS"
    assert isinstance(scram(plus, flag="p=tls-server-end-point", cb_data=CB.data,
                            binding=CB), Success)
    assert scram(plus, flag="p=tls-server-end-point", cb_data=b"\2" * 32, binding=CB) == \
        Failure("not-authorized")  # another channel
    assert scram(plus, flag="p=tls-unique", binding=CB) == Failure("malformed")
    assert scram(plus, binding=CB) == Failure("malformed")  # -PLUS without binding data
    assert scram(plus) == Failure("invalid-mechanism")  # no TLS: no -PLUS


def test_offered_only_what_works() -> None:
    assert offered(MECHANISMS, secured=False, binding=None) == ("SCRAM-SHA-256", "SCRAM-SHA-1")
    assert offered(MECHANISMS, secured=True, binding=CB) == MECHANISMS


def test_penalty_and_network() -> None:
    kw = dict(free=3, max_seconds=15.0, window=900.0)
    assert [penalty_delay(n, 1.0, **kw) for n in (0, 2, 3, 4, 5, 9, 99)] == \
        [0, 0, 1, 2, 4, 15, 15]
    assert penalty_delay(9, 1000.0, **kw) == 0  # forgotten after the window
    assert penalty_delay(9, 1.0, free=3, max_seconds=0, window=900) == 0  # off
    assert network_of("192.0.2.7") == "192.0.2.7" == network_of("192.0.2.7:4444")
    assert network_of("2001:db8::1") == network_of("2001:db8::ffff") == "2001:db8::/64"
    assert network_of("::ffff:192.0.2.7") == "192.0.2.7" and network_of("") == ""
    assert address_key("2001:db8:0:0:1::1") == "2001:db8::/64"


async def test_limiter_caps_and_release() -> None:
    lim = ConnectionLimiter("t", ListenerLimits(3, 2, 0))
    a, b = lim.admit("192.0.2.1"), lim.admit("192.0.2.1")
    assert a and b and lim.admit("192.0.2.1") is None  # per address
    c = lim.admit("192.0.2.2")
    assert c and lim.admit("192.0.2.3") is None  # total
    a.release()
    a.release()  # idempotent
    assert lim.active == 2 and lim.admit("192.0.2.1") is not None
    assert lim.metrics.get("connections_refused_total", listener="t", reason="per-ip") == 1
    assert lim.metrics.get("connections_refused_total", listener="t", reason="total") == 1


FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(mech=st.sampled_from(MECHANISMS), first=st.one_of(st.none(), st.binary(max_size=300)),
       more=st.lists(st.binary(max_size=300), max_size=3))
def test_fuzz_any_bytes_give_a_step(mech: str, first: bytes | None, more: list[bytes]) -> None:
    """Whatever a client sends, the exchange answers with a step (no exception)."""
    for step in run(mech, first, more, binding=CB):
        assert isinstance(step, Challenge | CheckPassword | NeedKeys | CheckProof | Success
                          | Failure)
        if isinstance(step, Success):
            pytest.fail(f"fuzz input authenticated: {mech} {first!r} {more!r}")


@FUZZ
@given(bare=st.text(max_size=80), final=st.text(max_size=200))
def test_fuzz_scram_text(bare: str, final: str) -> None:
    s = SaslServer("SCRAM-SHA-256", prepare=prepare)
    step = s.start(("n,," + bare).encode())
    if isinstance(step, NeedKeys):
        s.keys(KEYS["SCRAM-SHA-256"])
        step = s.receive(final.encode())
        if isinstance(step, CheckProof):
            assert s.check_proof() is False
    assert isinstance(step, Failure | NeedKeys | CheckProof)
