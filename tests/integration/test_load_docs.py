"""doc-exchange against our server: clerks submit documents by mail, the server seals them,
the receiving units' clerks get them in their INBOX (verified over IMAP)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.mailutil import PASSWORD
from tests.integration.test_load import load

pytestmark = pytest.mark.integration
CA_PASSPHRASE = "seal-passphrase-for-load-tests"
CLERKS = {"zhang.san": "finance", "wang.wu": "stats", "chen.qi": "town-lucheng"}


@pytest.fixture
def cfg_overrides() -> dict[str, dict[str, object]]:
    return {"ca": {"passphrase": CA_PASSPHRASE}}


@pytest.fixture
async def sealed_city(server: Any, tmp_path: Path) -> Any:
    docs = server.services.components["docs"]
    d = server.services.directory
    for unit, name in (("finance", "Finance"), ("stats", "Statistics"),
                       ("town-lucheng", "Lucheng")):
        await d.add_unit(unit, name)
    for user, unit in CLERKS.items():
        await d.add_user(user, unit, user, roles=["clerk"], password=PASSWORD)
    await server.services.components["mail"].parts.book.reload()
    await docs.certs.init_ca()
    for unit in set(CLERKS.values()):
        await docs.certs.issue_seal(unit)
    (tmp_path / "creds.csv").write_text("address,password,unit\n" + "".join(
        f"{u}@cx.example,{PASSWORD},{unit}\n" for u, unit in CLERKS.items()))
    (tmp_path / "clerks.csv").write_text("".join(
        f"{u}@cx.example,{unit}\n" for u, unit in CLERKS.items()))
    return server


async def test_doc_exchange_mailform_verified(sealed_city: Any, tmp_path: Path) -> None:
    s = sealed_city
    assert {"submission", "imaps"} <= set(s.ports)
    rc, r = await load(tmp_path, "doc-exchange", "--target", f"127.0.0.1:{s.ports['submission']}",
                       "--starttls", "--insecure", "--credentials", str(tmp_path / "creds.csv"),
                       "--clerks", str(tmp_path / "clerks.csv"), "--count", "6",
                       "--connections", "2", "--to-units", "2", "--size", "4k",
                       "--verify-imap", f"127.0.0.1:{s.ports['imaps']}", "--verify-imap-tls",
                       "--verify-poll", "0.05", "--verify-timeout", "20")
    assert rc == 0, (r["errors"], r.get("verification"))
    assert (r["sent"], r["delivered"], r["messages_sent"]) == (12, 12, 6)
    assert r["verification"]["seen"] == 12


async def test_doc_exchange_inject(sealed_city: Any, tmp_path: Path) -> None:
    s = sealed_city
    msgs = tmp_path / "msgs"
    msgs.mkdir()
    (msgs / "a.eml").write_bytes(b"From: x@outside.example\nSubject: not sealed\n\n.dot line\n")
    rc, r = await load(tmp_path, "doc-exchange", "--target", f"127.0.0.1:{s.ports['smtp']}",
                       "--messages", str(msgs), "--rcpt", "stats.docs@cx.example",
                       "--from", "x@outside.example", "--count", "3")
    assert rc == 0, r["errors"]
    assert (r["sent"], r["delivered"]) == (3, 3)
