"""ManageSieve (RFC 5804) against the running server with Python's `managesieve` client."""

from __future__ import annotations

import asyncio
from typing import Any

import managesieve
import pytest

from tests.integration.mailutil import PASSWORD, seed_city

pytestmark = pytest.mark.integration

SCRIPT = 'require ["fileinto"];\r\nif header :contains "subject" "report" {\r\n  fileinto "Reports";\r\n}\r\n'


@pytest.fixture
async def city(server: Any) -> Any:
    await seed_city(server)
    return server


def connect(port: int) -> managesieve.MANAGESIEVE:
    return managesieve.MANAGESIEVE("127.0.0.1", port, use_tls=True, tls_verify=False,
                                   timeout=10)


async def test_upload_activate_list_get_delete(city: Any) -> None:
    port = city.ports["managesieve"]

    def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        m = connect(port)
        out["caps"] = m.capabilities
        out["login"] = m.login("", "zhang.san", PASSWORD)
        assert out["login"] == "OK", (m.response_code, m.response_text, m.loginmechs)
        out["bad"] = m.putscript("bad", 'fileinto "x";')  # fileinto without require
        out["put"] = m.putscript("office", SCRIPT)
        out["put2"] = m.putscript("spare", "keep;\r\n")
        out["active"] = m.setactive("office")
        out["list"] = m.listscripts()
        out["get"] = m.getscript("office")
        out["del_active"] = m.deletescript("office")
        out["del"] = m.deletescript("spare")
        out["space"] = m.havespace("x", 10**9)
        out["logout"] = m.logout()
        return out

    out = await asyncio.to_thread(run)
    assert "fileinto" in out["caps"] and "vacation" in out["caps"]
    assert out["login"] == "OK"
    assert out["bad"] == "NO"
    assert (out["put"], out["put2"], out["active"]) == ("OK", "OK", "OK")
    assert out["list"] == ("OK", [("office", True), ("spare", False)])
    assert out["get"] == ("OK", SCRIPT)
    assert out["del_active"] == "NO"  # RFC 5804 §2.10: not the active script
    assert out["del"] == "OK" and out["space"] == "NO"
    async with city.services.db.pool.acquire() as conn:
        rows = await conn.fetch("select name, active from sieve_scripts order by name")
    assert [tuple(r) for r in rows] == [("office", True)]


async def test_no_login_before_tls_and_bad_password(city: Any) -> None:
    port = city.ports["managesieve"]

    def run() -> tuple[str, str, bool]:
        plain = managesieve.MANAGESIEVE("127.0.0.1", port, timeout=10)
        before = bool(plain.supports_tls) and plain.loginmechs == []
        try:  # no mechanism is offered before TLS, so the client refuses by itself
            plain.login("", "zhang.san", PASSWORD)
            r1 = "OK"
        except managesieve.MANAGESIEVE.abort:
            r1 = "NO"
        plain.logout()
        m = connect(port)
        r2 = m.login("", "zhang.san", "wrong-password")
        m.logout()
        return r1, r2, before

    r1, r2, before = await asyncio.to_thread(run)
    assert before and r1 == "NO" and r2 == "NO"


async def test_literal_bound_before_login(city: Any) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", city.ports["managesieve"])
    greeting = await asyncio.wait_for(r.readuntil(b"OK\r\n"), 10)
    assert b'"STARTTLS"' in greeting
    w.write(b'PUTSCRIPT "x" {100000000+}\r\n')
    out = await asyncio.wait_for(r.read(), 10)
    assert out.startswith(b"BYE") and b"Literal too large" in out
    w.close()
