"""xmpp-login and xmpp-chat against a tiny fake XMPP server; SCRAM client math."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest

from load.xmppclient import ScramClient
from tests.unit.load.conftest import Servers
from tests.unit.load.fakexmpp import FakeXmpp, FakeXmppWorld
from tests.unit.load.test_smtp_scenarios import assert_balanced, run

ACCOUNTS = {f"u{i}": f"pw-u{i}-secret" for i in range(6)}


def creds(tmp_path: Path) -> Path:
    f = tmp_path / "demo-passwords.csv"
    f.write_text("address,password,unit\n" + "".join(
        f"{u}@x.test,{pw},unit{i % 2}\n" for i, (u, pw) in enumerate(ACCOUNTS.items())))
    return f


def test_scram_sha256_rfc7677_vector() -> None:
    c = ScramClient("SCRAM-SHA-256", "user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    assert c.first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = c.final(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    assert final == (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    c.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    with pytest.raises(Exception, match="signature"):
        c.verify(b"v=" + base64.b64encode(hmac.new(b"k", b"m", hashlib.sha256).digest()))


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "PLAIN"])
def test_xmpp_login_storm(servers: Servers, tmp_path: Path, mech: str) -> None:
    world = FakeXmppWorld(ACCOUNTS)
    port = servers.start(lambda: FakeXmpp(world))
    report = tmp_path / "r.html"
    rc, r = run(["xmpp-login", "--target", f"127.0.0.1:{port}", "--count", "12",
                 "--connections", "4", "--no-starttls", "--mechanism", mech,
                 "--credentials", str(creds(tmp_path)), "--report", str(report)], tmp_path)
    assert rc == 0, r
    assert (r["sent"], r["delivered"], r["failed"]) == (12, 12, 0)
    assert world.logins == 12 and set(world.mechanisms) == {mech}
    assert r["login_ms"]["count"] == 12
    assert_balanced(r)
    assert '<img src="data:image/png;base64,' in report.read_text()


def test_xmpp_login_bad_password_is_failed(servers: Servers, tmp_path: Path) -> None:
    world = FakeXmppWorld({"u0": "other-password"})
    port = servers.start(lambda: FakeXmpp(world))
    rc, r = run(["xmpp-login", "--target", f"127.0.0.1:{port}", "--count", "3",
                 "--no-starttls", "--credentials", str(creds(tmp_path))], tmp_path)
    assert rc == 1
    assert (r["sent"], r["failed"], r["errors"]) == (3, 3, {"xmpp-auth": 3})
    assert_balanced(r)


def test_xmpp_chat_exact_accounting(servers: Servers, tmp_path: Path) -> None:
    world = FakeXmppWorld(ACCOUNTS)
    port = servers.start(lambda: FakeXmpp(world))
    rc, r = run(["xmpp-chat", "--target", f"127.0.0.1:{port}", "--count", "60",
                 "--connections", "3", "--window", "4", "--no-starttls",
                 "--credentials", str(creds(tmp_path))], tmp_path)
    assert rc == 0, r
    assert (r["sent"], r["delivered"], r["failed"], r["lost"]) == (60, 60, 0, 0)
    assert r["latency_ms"]["count"] == 60 and r["login_ms"]["count"] == 6
    assert_balanced(r)


def test_xmpp_chat_lost_and_bounced(servers: Servers, tmp_path: Path) -> None:
    world = FakeXmppWorld(ACCOUNTS)
    world.drop_to = {"u1"}  # u0 -> u1 vanishes
    world.bounce_to = {"u2"}  # u3 -> u2 bounces
    port = servers.start(lambda: FakeXmpp(world))
    rc, r = run(["xmpp-chat", "--target", f"127.0.0.1:{port}", "--count", "12",
                 "--connections", "3", "--window", "2", "--no-starttls",
                 "--verify-timeout", "0.3", "--credentials", str(creds(tmp_path))], tmp_path)
    assert rc == 1
    # pair 0 (u0,u1): u0->u1 vanishes; pair 1 (u2,u3): u3->u2 bounces; pair 2 is fine
    assert r["sent"] == 12
    assert r["failed"] == r["errors"]["xmpp-service-unavailable"] > 0
    assert r["lost"] == r["errors"]["not-received"] + r["errors"].get("timeout", 0) > 0
    assert r["delivered"] >= 4
    assert_balanced(r)
