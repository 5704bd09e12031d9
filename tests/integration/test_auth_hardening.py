"""Attacks on authentication against a running server (issue #12, item 1): the parallel
lockout race, fake SCRAM salts, equal writes, the per-network penalty, SCRAM-PLUS."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
from typing import Any

import pytest

from directory.scram import client_proof
from gateway.app import RunningServer, open_services

from .mailutil import PASSWORD, client_tls

USER = "zhang.san"


@pytest.fixture
def cfg_overrides() -> dict[str, dict[str, object]]:
    # The penalty is tested on its own below; here it would only make the race slow.
    return {"auth": {"lockout_failures": 3, "lockout_seconds": 60, "penalty_max_seconds": 0}}


@pytest.fixture
async def city(server: Any) -> Any:
    d = server.services.directory
    await d.add_unit("finance", "市财政局")
    await d.add_user(USER, "finance", "张三", password=PASSWORD)
    return server


class Imap:
    """A raw IMAP client over implicit TLS (what an attacker's script would be)."""

    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r, self.w = r, w

    @classmethod
    async def connect(cls, port: int) -> Imap:
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls())
        c = cls(r, w)
        assert (await r.readline()).startswith(b"* OK")
        return c

    async def cmd(self, line: bytes, tag: bytes = b"a") -> bytes:
        self.w.write(line + b"\r\n")
        while True:
            got = await asyncio.wait_for(self.r.readline(), 60)
            if not got or got.startswith(tag + b" ") or got.startswith(b"+"):
                return got

    async def close(self) -> None:
        self.w.close()
        try:
            await self.w.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


async def login(port: int, user: str, password: str) -> bytes:
    c = await Imap.connect(port)
    try:
        return await c.cmd(b'a LOGIN ' + user.encode() + b' "' + password.encode() + b'"')
    finally:
        await c.close()


async def test_parallel_logins_get_at_most_lockout_failures_checks(city: Any) -> None:
    """40 parallel wrong LOGINs (a guesser using parallelism): at most 3 (lockout_failures)
    passwords are checked in the window; the rest fail unchecked."""
    metrics = city.services.metrics
    before = metrics.get("auth_password_checks_total")
    replies = await asyncio.gather(*(login(city.ports["imaps"], USER, f"wrong-{i}")
                                     for i in range(40)))
    checks = metrics.get("auth_password_checks_total") - before
    assert checks == 3, checks  # counted, not timed: exactly the allowance
    assert all(r.startswith(b"a NO [AUTHENTICATIONFAILED]") for r in replies), replies
    # the window is closed for this name now, even with the right password
    assert (await login(city.ports["imaps"], USER, PASSWORD)).startswith(b"a NO")
    assert (await city.services.directory.get_user(USER)).locked_until is not None  # user show
    # ... and an admin can reopen it at once
    await city.services.directory.enable_user(USER)
    assert (await city.services.directory.get_user(USER)).locked_until is None
    assert (await login(city.ports["imaps"], USER, PASSWORD)).startswith(b"a OK")
    # the counters are on /metrics
    r, w = await asyncio.open_connection("127.0.0.1", city.ports["http"])
    w.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    body = await r.read()
    w.close()
    assert b"auth_password_checks_total" in body and b'auth_attempts_total{result="locked"}' in body


async def test_parallel_correct_logins_are_not_locked_out(city: Any) -> None:
    """A mail client opening ten connections at once with the right password (more than
    lockout_failures = 3): attempts over the count wait for the in-flight checks, and a
    success lets them through instead of locking the user out."""
    replies = await asyncio.gather(*(login(city.ports["imaps"], USER, PASSWORD)
                                     for _ in range(10)))
    assert all(r.startswith(b"a OK") for r in replies), replies
    assert (await city.services.directory.get_user(USER)).locked_until is None


async def scram_first(port: int, user: str, mech: str = "SCRAM-SHA-256") -> tuple[bytes, int]:
    """Start SCRAM over IMAP and return (salt, iterations) of the server-first message."""
    c = await Imap.connect(port)
    try:
        first = base64.b64encode(f"n,,n={user},r=abcdefgh".encode())
        out = await c.cmd(b"a AUTHENTICATE " + mech.encode() + b" " + first)
        assert out.startswith(b"+ "), out
        attrs = dict(p.split("=", 1) for p in base64.b64decode(out[2:].strip()).decode().split(","))
        return base64.b64decode(attrs["s"]), int(attrs["i"])
    finally:
        await c.close()


async def test_fake_salts_differ_per_name_and_survive_a_restart(city: Any, cfg: Any) -> None:
    port = city.ports["imaps"]
    ghost1, it1 = await scram_first(port, "ghost.one")
    ghost2, _ = await scram_first(port, "ghost.two")
    real, real_it = await scram_first(port, USER)
    assert ghost1 != ghost2 and real not in (ghost1, ghost2)
    assert it1 == real_it == cfg.auth.scram_iterations  # the configured count for both
    assert (await scram_first(port, "ghost.one"))[0] == ghost1  # stable
    assert (await scram_first(port, "ghost.one", "SCRAM-SHA-1"))[0] != ghost1  # per hash
    # A fresh process (another node, or this one restarted) on the same database:
    services = await open_services(cfg)
    other = RunningServer(services)
    try:
        await other.start()
        assert (await scram_first(other.ports["imaps"], "ghost.one"))[0] == ghost1
        assert (await scram_first(other.ports["imaps"], USER))[0] == real
    finally:
        await other.stop()
        await services.db.close()


async def test_known_and_unknown_names_cost_the_same_writes(city: Any) -> None:
    """A failed login writes the same rows whether the name exists or not, and never the
    account row itself (no enumeration through the database either)."""
    pool = city.services.db.pool

    async def snapshot() -> tuple[Any, ...]:
        async with pool.acquire() as conn:
            accounts = await conn.fetch("select xmin::text, * from accounts order by id")
            names = await conn.fetch("select name, attempts from auth_attempts order by name")
        return tuple(accounts), tuple((r["name"], r["attempts"]) for r in names)

    acc0, names0 = await snapshot()
    assert (await login(city.ports["imaps"], USER, "wrong")).startswith(b"a NO")
    assert (await login(city.ports["imaps"], "nobody", "wrong")).startswith(b"a NO")
    acc1, names1 = await snapshot()
    assert acc1 == acc0  # the account row is untouched by a failure
    assert names1 == (("nobody@cx.example", 1), (f"{USER}@cx.example", 1))
    # disabled users fail like everyone else (same reply, same counting)
    await city.services.directory.disable_user(USER)
    assert (await login(city.ports["imaps"], USER, PASSWORD)) == \
        (await login(city.ports["imaps"], "nobody", PASSWORD))


@pytest.mark.parametrize("cfg_overrides", [{"auth": {
    "lockout_failures": 50, "penalty_free_failures": 2, "penalty_max_seconds": 1}}])
async def test_failures_from_one_network_slow_its_next_attempts(city: Any) -> None:
    """Spraying many names from one address: after `penalty_free_failures` the network's
    attempts wait (Dovecot's auth penalty); a success from there clears it."""
    metrics = city.services.metrics
    port = city.ports["imaps"]
    for name in ("a.one", "b.two"):  # two different names: the penalty is per network
        assert (await login(port, name, "x")).startswith(b"a NO")
    assert metrics.get("auth_throttled_total") == 0
    assert (await login(port, "c.three", "x")).startswith(b"a NO")
    assert metrics.get("auth_throttled_total") == 1  # this attempt waited
    assert (await login(port, USER, PASSWORD)).startswith(b"a OK")  # waited, then fine
    async with city.services.db.pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from auth_penalty") == 0  # cleared
    throttled = metrics.get("auth_throttled_total")
    assert (await login(port, "d.four", "x")).startswith(b"a NO")
    assert metrics.get("auth_throttled_total") == throttled  # a fresh start after success


@pytest.mark.parametrize("cfg_overrides", [{"auth": {
    "lockout_failures": 2, "lockout_seconds": 1, "penalty_max_seconds": 0}}])
async def test_a_locked_victim_is_locked_for_one_window_only(city: Any) -> None:
    port = city.ports["imaps"]
    for _ in range(3):
        assert (await login(port, USER, "guess")).startswith(b"a NO")
    assert (await login(port, USER, PASSWORD)).startswith(b"a NO")  # locked now
    await asyncio.sleep(1.2)  # the window (lockout_seconds=1) ends by itself
    assert (await login(port, USER, PASSWORD)).startswith(b"a OK")


def end_point(cert_der: bytes) -> bytes:
    return hashlib.sha256(cert_der).digest()  # our self-signed certificate is ECDSA-SHA256


async def scram_plus(port: int, password: str, *, cb: bytes | None = None,
                     flag: str = "p=tls-server-end-point",
                     mech: str = "SCRAM-SHA-256-PLUS") -> bytes:
    c = await Imap.connect(port)
    try:
        ssl_obj = c.w.get_extra_info("ssl_object")
        data = cb if cb is not None else end_point(ssl_obj.getpeercert(binary_form=True))
        gs2 = f"{flag},,"
        bare = f"n={USER},r=clientnonce"
        out = await c.cmd(b"a AUTHENTICATE " + mech.encode() + b" " +
                          base64.b64encode((gs2 + bare).encode()))
        if not out.startswith(b"+ "):
            return out
        server_first = base64.b64decode(out[2:].strip()).decode()
        nonce = server_first.split(",")[0][2:]
        cbind = base64.b64encode(gs2.encode() + (data if flag.startswith("p=") else b""))
        without = f"c={cbind.decode()},r={nonce}"
        proof, sig = client_proof(mech[:-5] if mech.endswith("-PLUS") else mech, password,
                                  bare, server_first, without)
        out = await c.cmd(base64.b64encode(f"{without},p={proof}".encode()))
        if not out.startswith(b"+ "):
            return out
        assert base64.b64decode(out[2:].strip()).decode() == "v=" + sig
        return await c.cmd(b"")
    finally:
        await c.close()


async def test_scram_plus_binds_to_the_server_certificate(city: Any) -> None:
    port = city.ports["imaps"]
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls())
    caps = await r.readline()
    w.close()
    assert b"AUTH=SCRAM-SHA-256-PLUS" in caps and b"AUTH=SCRAM-SHA-1-PLUS" in caps
    assert (await scram_plus(port, PASSWORD)).startswith(b"a OK")
    assert (await scram_plus(port, PASSWORD, mech="SCRAM-SHA-1-PLUS")).startswith(b"a OK")
    # another certificate's binding (a man in the middle) fails
    assert (await scram_plus(port, PASSWORD, cb=b"\0" * 32)).startswith(b"a NO")
    # a client that thinks we lack binding ("y") while we offer it: a downgrade, refused
    out = await scram_plus(port, PASSWORD, flag="y", mech="SCRAM-SHA-256")
    assert out.startswith(b"a NO")
    out = await scram_plus(port, PASSWORD, flag="p=tls-unique")  # a type we cannot do
    assert out.startswith(b"a NO")
    # without TLS (before STARTTLS) -PLUS is not offered at all
    r, w = await asyncio.open_connection("127.0.0.1", city.ports["imap"])
    caps = await r.readline()
    w.close()
    assert b"-PLUS" not in caps


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1-PLUS"])
async def test_smtp_submission_speaks_scram(city: Any, mech: str) -> None:
    """The same SASL module on SMTP (RFC 4954): server-final in a last 334, then 235."""
    r, w = await asyncio.open_connection("127.0.0.1", city.ports["submissions"],
                                         ssl=client_tls())

    async def reply() -> bytes:
        lines = [await asyncio.wait_for(r.readline(), 30)]
        while lines[-1][3:4] == b"-":
            lines.append(await asyncio.wait_for(r.readline(), 30))
        return b"".join(lines)

    assert (await reply()).startswith(b"220")
    w.write(b"EHLO me.example\r\n")
    ehlo = await reply()
    assert b"SCRAM-SHA-256" in ehlo and b"SCRAM-SHA-1-PLUS" in ehlo
    plus = mech.endswith("-PLUS")
    gs2 = "p=tls-server-end-point,," if plus else "n,,"
    cb = end_point(w.get_extra_info("ssl_object").getpeercert(binary_form=True)) if plus else b""
    bare = f"n={USER},r=smtpnonce"
    w.write(f"AUTH {mech} ".encode() + base64.b64encode((gs2 + bare).encode()) + b"\r\n")
    first = await reply()
    assert first.startswith(b"334 "), first
    server_first = base64.b64decode(first[4:].strip()).decode()
    without = f"c={base64.b64encode(gs2.encode() + cb).decode()},r={server_first.split(',')[0][2:]}"
    proof, sig = client_proof(mech.removesuffix("-PLUS"), PASSWORD, bare, server_first, without)
    w.write(base64.b64encode(f"{without},p={proof}".encode()) + b"\r\n")
    final = await reply()
    assert final.startswith(b"334 ") and base64.b64decode(final[4:].strip()) == f"v={sig}".encode()
    w.write(b"\r\n")
    assert (await reply()).startswith(b"235 2.7.0")
    w.write(b"QUIT\r\n")
    w.close()
