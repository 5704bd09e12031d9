"""The load harness against our own server (in-process, port 0): every scenario briefly,
with exact accounting, the JSON result and the HTML report.

The harness runs in a worker thread with its own event loop (as `cxgw load` would), the
server in the test's loop. Every listener is on in the test config, so every scenario runs.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from load.cli import main
from tests.integration.mailutil import PASSWORD, seed_city

pytestmark = pytest.mark.integration
USERS = ["zhang.san", "li.si", "wang.wu", "zhao.liu", "sun.qi", "zhou.ba"]


@pytest.fixture
def cfg_overrides() -> dict[str, dict[str, object]]:
    # the harness sends on port 25 as our own users (a local tool): a trusted network
    return {"smtp": {"trusted_networks": ["127.0.0.0/8"]}}


@pytest.fixture
async def city(server: Any, tmp_path: Path) -> Any:
    await seed_city(server)
    d = server.services.directory
    for i, u in enumerate(USERS[3:]):
        await d.add_user(u, ("finance", "stats")[i % 2], u, password=PASSWORD)
    await server.services.components["mail"].parts.book.reload()
    creds = tmp_path / "demo-passwords.csv"  # the format `cxgw demo seed` writes
    units = {"zhang.san": "finance", "li.si": "finance", "wang.wu": "stats"}
    creds.write_text("address,password,unit\n" + "".join(
        f"{u}@cx.example,{PASSWORD},{units.get(u, ('finance', 'stats')[i % 2])}\n"
        for i, u in enumerate(USERS)))
    server.creds = creds
    return server


async def load(tmp_path: Path, *argv: str) -> tuple[int, dict[str, Any]]:
    out, report = tmp_path / "r.json", tmp_path / "r.html"
    rc = await asyncio.to_thread(main, [*argv, "--quiet", "--json", str(out),
                                        "--report", str(report)])
    r = json.loads(out.read_text())
    assert r["sent"] == r["delivered"] + r["failed"] + r["lost"] and r["balanced"]
    assert sum(r["errors"].values()) == r["failed"] + r["lost"]
    assert report.read_text().count('<img src="data:image/png;base64,') == 3
    assert (tmp_path / "r-throughput.png").read_bytes()[:4] == b"\x89PNG"
    return rc, r


def need(server: Any, *ports: str) -> None:
    """The test config turns every listener on: a missing one is a failure, not a skip."""
    missing = [p for p in ports if p not in server.ports]
    assert not missing, f"server has no {', '.join(missing)} listener"


@pytest.mark.parametrize("reuse", [False, True])
async def test_smtp_burst(city: Any, tmp_path: Path, reuse: bool) -> None:
    rc, r = await load(tmp_path, "smtp-burst", "--target", f"127.0.0.1:{city.ports['smtp']}",
                       "--count", "12", "--connections", "3", "--credentials", str(city.creds),
                       "--from", "load@outside.example", *(["--reuse"] if reuse else []))
    assert rc == 0, (r["errors"], r["params"])
    assert (r["sent"], r["delivered"]) == (12, 12)


async def test_smtp_circular_verified_over_imap(city: Any, tmp_path: Path) -> None:
    need(city, "imaps")
    rc, r = await load(tmp_path, "smtp-circular", "--target", f"127.0.0.1:{city.ports['smtp']}",
                       "--credentials", str(city.creds), "--from", "mayor@outside.example",
                       "--max-rcpts", "4", "--verify-imap", f"127.0.0.1:{city.ports['imaps']}",
                       "--verify-imap-tls", "--insecure", "--verify-poll", "0.02",
                       "--verify-timeout", "15")
    assert rc == 0, r
    assert (r["sent"], r["delivered"], r["lost"]) == (6, 6, 0)
    assert r["verification"]["seen"] == 6 and r["e2e_latency_ms"]["count"] == 6
    assert r["reach_everyone_basis"] == "e2e"


async def test_imap_sync(city: Any, tmp_path: Path) -> None:
    need(city, "imaps")
    await load(tmp_path, "smtp-burst", "--target", f"127.0.0.1:{city.ports['smtp']}",
               "--count", "12", "--credentials", str(city.creds), "--from", "a@outside.example")
    rc, r = await load(tmp_path, "imap-sync", "--target", f"127.0.0.1:{city.ports['imaps']}",
                       "--tls", "--insecure", "--count", "12", "--connections", "3",
                       "--credentials", str(city.creds))
    assert rc == 0, r
    assert (r["sent"], r["delivered"]) == (12, 12)


async def test_imap_idle_push(city: Any, tmp_path: Path) -> None:
    need(city, "imaps")
    rc, r = await load(tmp_path, "imap-idle", "--target", f"127.0.0.1:{city.ports['imaps']}",
                       "--tls", "--insecure", "--smtp", f"127.0.0.1:{city.ports['smtp']}",
                       "--count", "9", "--connections", "3", "--credentials", str(city.creds))
    assert rc == 0, r
    assert (r["sent"], r["delivered"]) == (9, 9)
    assert r["latency_ms"]["count"] == 9 and r["e2e_latency_ms"]["count"] == 9


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "PLAIN"])
async def test_xmpp_login(city: Any, tmp_path: Path, mech: str) -> None:
    need(city, "xmpp")
    rc, r = await load(tmp_path, "xmpp-login", "--target", f"127.0.0.1:{city.ports['xmpp']}",
                       "--insecure", "--mechanism", mech, "--count", "8", "--connections", "4",
                       "--credentials", str(city.creds))
    assert rc == 0, r
    assert (r["sent"], r["delivered"]) == (8, 8)


async def test_xmpp_chat(city: Any, tmp_path: Path) -> None:
    need(city, "xmpp")
    rc, r = await load(tmp_path, "xmpp-chat", "--target", f"127.0.0.1:{city.ports['xmpp']}",
                       "--insecure", "--count", "60", "--connections", "3", "--window", "4",
                       "--credentials", str(city.creds))
    assert rc == 0, r
    assert (r["sent"], r["delivered"]) == (60, 60)


async def _workday(city: Any, tmp_path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    """A short, fast workday against every listener of `city` (the parts' ports given)."""
    need(city, "imaps", "xmpp", "submission")
    p = city.ports
    return await load(tmp_path, "workday", "--target", "127.0.0.1", "--insecure",
                      "--credentials", str(city.creds), "--acceleration", "20000",
                      "--duration", "1.5", "--chat-pairs", "2", *extra,
                      "--smtp-port", str(p["smtp"]), "--submission-port", str(p["submission"]),
                      "--imaps-port", str(p["imaps"]), "--xmpp-port", str(p["xmpp"]),
                      "--seed", "1")


async def test_workday_all_protocols(city: Any, tmp_path: Path) -> None:
    rc, r = await _workday(city, tmp_path, "--connections", "3")
    assert rc == 0, (r["errors"], r["error_samples"], r.get("skipped"), r["protocols"])
    parts = r["protocols"]
    assert set(parts) == {"mail", "imap", "chat", "docs", "circular"}, r.get("skipped")
    assert all(v["sent"] > 0 for v in parts.values()), parts
    assert r["sent"] == sum(v["sent"] for v in parts.values())
    assert parts["circular"]["sent"] == 6 * r["params"]["circulars"]


async def test_workday_two_generator_processes(city: Any, tmp_path: Path) -> None:
    """Issue 17: `--processes 2` splits the staff and every rate between two generator
    processes and merges their results into one report: the books balance, every part
    ran, the per-part counts add up to the total, and each process's CPU is reported."""
    rc, r = await _workday(city, tmp_path, "--connections", "4", "--processes", "2")
    assert rc == 0, (r["errors"], r["error_samples"], r.get("skipped"), r["protocols"])
    parts = r["protocols"]
    assert set(parts) == {"mail", "imap", "chat", "docs", "circular"}, r.get("skipped")
    assert all(v["sent"] > 0 for v in parts.values()), parts
    for k in ("sent", "delivered", "failed", "lost"):
        assert r[k] == sum(v[k] for v in parts.values()), k
    assert r["latency_ms"]["count"] == sum(v["latency_ms"]["count"] for v in parts.values())
    assert parts["circular"]["sent"] == 6 * r["params"]["circulars"]  # shard 0 alone sends them
    gen = r["generator"]
    assert gen["processes"] == 2 and len(gen["cpu_s"]) == 2 and all(c > 0 for c in gen["cpu_s"])
    assert r["params"]["processes"] == 2


async def test_xmpp_chat_two_nodes(city: Any, cfg: Any, tmp_path: Path) -> None:
    """Issue 14: half the clients on a second node sharing the database; every pair
    chats across the two nodes."""
    from gateway.app import RunningServer, open_services
    need(city, "xmpp")
    other = await open_services(cfg)
    second = RunningServer(other)
    try:
        await second.start()
        rc, r = await load(tmp_path, "xmpp-chat", "--target", f"127.0.0.1:{city.ports['xmpp']}",
                           "--second-target", f"127.0.0.1:{second.ports['xmpp']}",
                           "--insecure", "--count", "60", "--connections", "3", "--window", "4",
                           "--credentials", str(city.creds))
        assert rc == 0, r
        assert (r["sent"], r["delivered"]) == (60, 60)
        assert r["params"]["second_target"] == f"127.0.0.1:{second.ports['xmpp']}"
        assert other.components["xmpp"].cluster.handed > 0  # it did cross nodes
    finally:
        await second.stop()
        await other.db.close()
