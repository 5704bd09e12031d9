"""`cxgw queue ...`, `cxgw mail send` and `cxgw dkim keygen` end to end."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway.cli.main import main
from tests.integration.mailutil import seed_city


@pytest.fixture
def cfg_overrides(tmp_path):
    # an upstream that does not answer, so remote mail stays in the queue
    return {"relay": {"smarthost": "127.0.0.1:9"}, "queue": {"retry_initial": 3600, "retry_max": 3600},
            "server": {"state_dir": str(tmp_path / "state")}}


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


async def cli(capsys, monkeypatch, cfg, *argv):
    monkeypatch.setenv("CXGW_DATABASE_URL", cfg.database.url)
    conf = cfg.state_path.parent / "cx.toml"
    conf.write_text(f'[server]\nstate_dir = "{cfg.state_path}"\n[relay]\nsmarthost = "127.0.0.1:9"\n')
    monkeypatch.setenv("CXGW_CONFIG", str(conf))
    return await asyncio.get_running_loop().run_in_executor(None, run, list(argv), capsys)


async def test_mail_send_then_queue_verbs(server, cfg, capsys, monkeypatch):
    await seed_city(server)
    code, out, err = await cli(capsys, monkeypatch, cfg, "mail", "send", "--from",
                               "zhang.san@cx.example", "--to", "li.si@cx.example,far@remote.example",
                               "--subject", "通知", "--body", "明天开会", "--json")
    assert code == 0, err
    qid = json.loads(out)["queue_id"]
    # local recipient delivered by the running server; the remote one waits
    from tests.integration.mailutil import wait_inbox
    (msg,) = await wait_inbox(server, "li.si@cx.example", 1)
    assert b"Subject: =?utf-8?" in msg and b"with LOCAL" in msg
    await asyncio.sleep(0.3)
    code, out, _ = await cli(capsys, monkeypatch, cfg, "queue", "list", "--json")
    rows = json.loads(out)
    assert [r["recipient"] for r in rows] == ["far@remote.example"] and rows[0]["queue_id"] == qid
    code, out, _ = await cli(capsys, monkeypatch, cfg, "queue", "show", qid, "--json")
    info = json.loads(out)
    assert info["finished"][0]["status"] == "delivered" and info["pending"][0]["attempts"] >= 1
    assert (await cli(capsys, monkeypatch, cfg, "queue", "hold", qid))[0] == 0
    code, out, _ = await cli(capsys, monkeypatch, cfg, "queue", "stats", "--json")
    stats = json.loads(out)
    assert stats[0]["state"] == "held" and stats[0]["destination"] == "remote.example"
    assert (await cli(capsys, monkeypatch, cfg, "queue", "release", qid))[0] == 0
    assert (await cli(capsys, monkeypatch, cfg, "queue", "retry", "--all"))[0] == 0
    code, out, _ = await cli(capsys, monkeypatch, cfg, "queue", "delete", qid)
    assert code == 0
    code, out, _ = await cli(capsys, monkeypatch, cfg, "queue", "list", "--json")
    assert json.loads(out) == []
    code, _, err = await cli(capsys, monkeypatch, cfg, "queue", "show", "NOSUCHID")
    assert code == 3


async def test_dkim_keygen(server, cfg, capsys, monkeypatch):
    code, out, err = await cli(capsys, monkeypatch, cfg, "dkim", "keygen", "--bits", "1024")
    assert code == 0, err
    assert "cx._domainkey.cx.example" in out and "v=DKIM1" in out
    assert (cfg.state_path / "dkim" / "cx.key").exists()
    code, _, err = await cli(capsys, monkeypatch, cfg, "dkim", "keygen")
    assert code == 5 and "exists" in err
