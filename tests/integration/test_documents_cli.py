"""`cxgw ca|seal|cert|doc` end to end: the CLI (in-process, in a thread) against a running
server on the same test database."""

from __future__ import annotations

import asyncio
import io
import json
import sys

import pytest
from cryptography import x509

from directory.ca import load_pkcs12
from gateway.cli.main import main
from tests.integration.mailutil import PASSWORD, wait_inbox
from tests.integration.test_documents_helpers import CA_PASSPHRASE, wait_for


@pytest.fixture
def cfg_overrides():
    return {"ca": {"passphrase": CA_PASSPHRASE}}


@pytest.fixture
def cli(db_url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CXGW_DATABASE_URL", db_url)
    conf = tmp_path / "cx.toml"
    conf.write_text(f'[server]\nstate_dir = "{tmp_path / "cli-state"}"\n')
    monkeypatch.setenv("CXGW_CONFIG", str(conf))
    monkeypatch.delenv("CXGW_CA_PASSPHRASE", raising=False)

    async def run(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = await asyncio.to_thread(main, list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


async def test_cli_ca_seal_cert_doc(server, cli, monkeypatch, tmp_path):
    d = server.services.directory
    await d.add_unit("finance", "市财政局")
    await d.add_unit("stats", "市统计局")
    await d.add_user("zhang.san", "finance", "张三", roles=["clerk"], password=PASSWORD)
    await d.add_user("wang.wu", "stats", "王五", roles=["clerk"], password=PASSWORD)
    await server.services.components["mail"].parts.book.reload()

    code, _, err = await cli("ca", "cert")
    assert code == 3 and "ca init" in err
    code, _, err = await cli("ca", "init")
    assert code == 5 and "passphrase" in err  # refuses to store a key in the clear
    monkeypatch.setenv("CXGW_CA_PASSPHRASE", CA_PASSPHRASE)
    code, out, err = await cli("ca", "init", "--json")
    assert code == 0, err
    assert "CN=CX City Root CA" in json.loads(out)["subject"]
    assert (await cli("ca", "init"))[0] == 4
    code, pem, _ = await cli("ca", "cert")
    ca = x509.load_pem_x509_certificate(pem.encode())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    for unit in ("finance", "stats"):
        code, out, err = await cli("seal", "issue", unit, "--json")
        assert code == 0, err
        assert json.loads(out)["address"] == f"{unit}.docs@cx.example"
    code, out, err = await cli("cert", "issue", "zhang.san", "--json")
    assert code == 0, err
    personal = json.loads(out)["serial"]
    p12 = tmp_path / "zhang.p12"
    code, _, err = await cli("cert", "export", "zhang.san", "--p12", str(p12),
                             stdin="Export-pass-1\n")
    assert code == 0, err
    bundle = load_pkcs12(p12.read_bytes(), b"Export-pass-1")
    assert f"{bundle.certificate.serial_number:x}" == personal
    assert oct(p12.stat().st_mode & 0o777) == "0o600"
    code, out, _ = await cli("cert", "list", "--json")
    certs = json.loads(out)
    assert [(c["kind"], c["state"]) for c in certs] == [("seal", "valid")] * 2 + [("personal",
                                                                                   "valid")]

    doc = tmp_path / "通知.txt"
    doc.write_text("各单位：……\n" * 100, encoding="utf-8")
    code, out, err = await cli("doc", "send", "--from", "finance", "--to", "stats",
                               "--title", "关于报送统计数据的通知", "--number", "楚财发〔2026〕9号",
                               "--urgency", "urgent", str(doc), "--json")
    assert code == 0, err
    ident = str(json.loads(out)["id"])
    [delivered] = await wait_inbox(server, "wang.wu@cx.example", 1)

    async def state(want: str):
        code, out, _ = await cli("doc", "status", ident, "--json")
        st = json.loads(out)
        return st if st["recipients"][0]["state"] == want else None
    st = await wait_for(lambda: state("delivered"))
    assert st["recipients"][0]["verdict"] == "trusted"
    code, out, _ = await cli("doc", "list", "--unit", "stats", "--json")
    [row] = json.loads(out)
    assert (row["id"], row["state"], row["verdict"]) == (int(ident), "delivered", "trusted")
    code, out, _ = await cli("doc", "status", ident)
    assert code == 0 and "delivered" in out
    raw = tmp_path / "raw.eml"
    assert (await cli("doc", "show", ident, "--raw", "--unit", "stats", "-o", str(raw)))[0] == 0
    assert raw.read_bytes() == delivered

    code, out, err = await cli("doc", "receipt", ident, "--by", "wang.wu")
    assert code == 0, err
    st = await wait_for(lambda: state("signed"))
    assert st["recipients"][0]["signed_by"] == "wang.wu@cx.example"

    code, out, err = await cli("cert", "revoke", personal, "--reason", "key-compromise", "--json")
    assert code == 0, err
    assert json.loads(out)["state"] == "revoked"
    assert (await cli("cert", "revoke", personal))[0] == 4
    assert (await cli("cert", "revoke", "zz"))[0] == 5
    code, out, _ = await cli("doc", "list", "--state", "held", "--json")
    assert json.loads(out) == []
    code, _, err = await cli("doc", "send", "--from", "stats", "--to", "nowhere", "--title", "t",
                             "--number", "n")
    assert code == 3 and "nowhere" in err
