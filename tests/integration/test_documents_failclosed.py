"""Issue #11 items 1 and 9: the trust path fails closed when a piece is missing, and keys
are protected at rest."""

from __future__ import annotations

import json
import os
import sys

import pytest

from cxkernel.config import CAConfig
from directory.ca.keys import PBKDF2_ITERATIONS, kdf_iterations, passphrase_problem
from directory.certs import passphrase_file_exposed
from mailrelay.documents.docmime import Attachment, DocumentMeta
from mailrelay.documents.seal import seal_document
from tests.integration.mailutil import inbox
from tests.integration.test_documents_helpers import (
    CA_PASSPHRASE,
    cli_runner,
    inject,
    seal_city,
    wait_for,
)


@pytest.fixture
def cfg_overrides():
    # inject() plays another organisation's gateway relaying our unit addresses: a trusted
    # peer (from anyone else, our own domain on port 25 is refused before any of this)
    return {"ca": {"passphrase": CA_PASSPHRASE}, "smtp": {"trusted_networks": ["127.0.0.0/8"]}}


@pytest.fixture
async def docs(server):
    return await seal_city(server)


@pytest.fixture
def cli(db_url, tmp_path, monkeypatch, capsys):
    return cli_runner(db_url, tmp_path, monkeypatch, capsys)


async def test_document_inbox_defers_when_the_handler_is_not_running(server, docs):
    from datetime import UTC, datetime
    scheduler = server.services.components["mail"].parts.scheduler
    scheduler.docs_handler = None  # e.g. the docs component stopped
    meta = DocumentMeta(doc_id=DocumentMeta.new_id(), number="1号", title="t",
                        from_unit="finance", to_units=("stats",))
    raw = seal_document(meta, "正文", [Attachment("a.txt", b"A", "text/plain")],
                        await docs.signer("finance"), from_addr="finance.docs@cx.example",
                        to_addrs=["stats.docs@cx.example"], now=datetime.now(UTC),
                        domain="cx.example")
    await inject(server, raw)

    async def deferred():
        async with server.services.db.pool.acquire() as conn:
            return await conn.fetchrow("select state, attempts, last_error from queue"
                                       " where recipient = 'stats.docs@cx.example'"
                                       " and attempts >= 1 and state = 'ready'")
    row = await wait_for(deferred)
    assert row is not None and "451" in row["last_error"], row
    assert await inbox(server, "wang.wu@cx.example") == []
    assert await docs.list() == []


def test_missing_wiring_module_stops_the_start(monkeypatch):
    from gateway import app
    monkeypatch.setitem(sys.modules, "gateway.wiring_docs", None)  # import fails
    with pytest.raises(RuntimeError, match="gateway.wiring_docs"):
        app._load_factories()


async def test_keys_at_rest_and_passwords(server, docs, cli, tmp_path, monkeypatch):
    async with server.services.db.pool.acquire() as conn:
        ca_key = bytes(await conn.fetchval("select key_pem from ca"))
        seal_keys = [bytes(r["key_pem"]) for r in await conn.fetch(
            "select key_pem from certificates where key_pem is not null")]
    assert kdf_iterations(ca_key) >= PBKDF2_ITERATIONS >= 600_000
    assert seal_keys and all(kdf_iterations(k) >= 600_000 for k in seal_keys)
    # a key stored by an earlier version (2,048 PBKDF2 iterations) is re-encrypted on use
    from cryptography.hazmat.primitives import serialization

    from directory.certs import CertificateService
    seal = await docs.signer("finance")
    old = seal.key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.BestAvailableEncryption(CA_PASSPHRASE.encode()))
    assert kdf_iterations(old) < 600_000
    serial = f"{seal.certificate.serial_number:x}"
    async with server.services.db.pool.acquire() as conn:
        await conn.execute("update certificates set key_pem = $2 where serial = $1",
                           serial, old)
    fresh = CertificateService.from_config(server.services.cfg, server.services.db.pool)
    await fresh.seal_key("finance")
    async with server.services.db.pool.acquire() as conn:
        now_pem = bytes(await conn.fetchval("select key_pem from certificates"
                                            " where serial = $1", serial))
    assert kdf_iterations(now_pem) >= 600_000
    # PKCS#12 export passwords are checked
    assert (await cli("cert", "issue", "zhang.san"))[0] == 0
    code, _, err = await cli("cert", "export", "zhang.san", "--p12", str(tmp_path / "z.p12"),
                             stdin="123456\n")
    assert code != 0 and "too weak" in err
    assert not (tmp_path / "z.p12").exists()
    # revoking destroys the stored key
    code, out, _ = await cli("cert", "list", "--json")
    serial = next(c["serial"] for c in json.loads(out) if c["kind"] == "personal")
    assert (await cli("cert", "revoke", serial, "--reason", "superseded"))[0] == 0
    async with server.services.db.pool.acquire() as conn:
        assert await conn.fetchval("select key_pem from certificates where serial = $1",
                                   serial) is None


async def test_ca_init_refuses_a_weak_passphrase(db_url, cli, monkeypatch):
    monkeypatch.setenv("CXGW_CA_PASSPHRASE", "secret")
    code, _, err = await cli("ca", "init")
    assert code != 0 and "too weak" in err


def test_passphrase_rules_and_file_mode(tmp_path):
    assert passphrase_problem("secret") is not None
    assert passphrase_problem("aaaaaaaaaaaaaaaaaaaaaa") is not None
    assert passphrase_problem("Correct-horse-9") is None
    assert passphrase_problem("seal-passphrase-for-tests") is None  # long enough
    f = tmp_path / "pass"
    f.write_text("Correct-horse-9\n")
    os.chmod(f, 0o644)
    assert passphrase_file_exposed(CAConfig(passphrase_file=str(f)))
    os.chmod(f, 0o600)
    assert not passphrase_file_exposed(CAConfig(passphrase_file=str(f)))
