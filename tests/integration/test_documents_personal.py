"""Mail signed "in Thunderbird": an ordinary S/MIME multipart/signed mail, signed with a
personal certificate from `cxgw cert issue` (exported with `cxgw cert export --p12`, as
the person would load it into the mail client), From = that person, arriving by SMTP at a
unit's document inbox. It is verified like a seal; not being a cx document, it is
delivered as signed mail ("signed", not "trusted") and never registered as a document
(issue #11 item 2); the delivered copy verifies with OpenSSL and gpgsm too."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import aiosmtplib
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from directory.ca import load_pkcs12
from mailrelay.documents.chain import TrustAnchors
from mailrelay.documents.seal import Signer, assemble_signed, sign_detached
from mailrelay.documents.verify import find_signed, verify_message
from tests.integration.mailutil import inbox, wait_inbox
from tests.integration.test_documents_helpers import (
    CA_PASSPHRASE,
    cli_runner,
    seal_city,
    wait_for,
    without_trace,
)

SUBJECT = "关于报送第一季度统计报表的函"
OPENSSL = shutil.which("openssl")
GPGSM = shutil.which("gpgsm")


@pytest.fixture
def cfg_overrides():
    # inject() plays another organisation's gateway with our unit addresses: a trusted peer
    return {"ca": {"passphrase": CA_PASSPHRASE}, "smtp": {"trusted_networks": ["127.0.0.0/8"]}}


@pytest.fixture
async def docs(server):
    return await seal_city(server)


@pytest.fixture
def cli(db_url, tmp_path, monkeypatch, capsys):
    return cli_runner(db_url, tmp_path, monkeypatch, capsys)


def _entity() -> bytes:
    text = "王五同志：\n请于本周五前报送第一季度统计报表。\n张三\n".encode()
    body = base64.encodebytes(text).replace(b"\n", b"\r\n")
    return (b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + body)


def _outer(sender: str) -> list[bytes]:
    from mailrelay.documents.mimeparts import header, text_header
    return [header("From", f"<{sender}>"), header("To", "<stats.docs@cx.example>"),
            text_header("Subject", SUBJECT),
            header("Date", email.utils.format_datetime(datetime.now(UTC))),
            header("Message-ID", email.utils.make_msgid(domain="cx.example"))]


def sign_like_a_mail_client(tmp: Path, bundle, sender: str) -> bytes:
    """`openssl smime -sign` (an independent S/MIME implementation) when installed, else
    our own multipart/signed assembly with the personal key."""
    outer = b"".join(_outer(sender))
    if OPENSSL is None:
        signer = Signer(bundle.key, bundle.certificate, tuple(bundle.chain))
        entity = _entity()
        return assemble_signed(_outer(sender), entity, sign_detached(entity, signer))
    (tmp / "cert.pem").write_bytes(bundle.certificate.public_bytes(Encoding.PEM))
    (tmp / "key.pem").write_bytes(bundle.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8,
                                                           NoEncryption()))
    (tmp / "chain.pem").write_bytes(b"".join(c.public_bytes(Encoding.PEM)
                                             for c in bundle.chain))
    (tmp / "in.eml").write_bytes(_entity())
    res = subprocess.run([OPENSSL, "smime", "-sign", "-md", "sha256", "-in", str(tmp / "in.eml"),
                          "-signer", str(tmp / "cert.pem"), "-inkey", str(tmp / "key.pem"),
                          "-certfile", str(tmp / "chain.pem"), "-crlfeol"],
                         capture_output=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr.decode()
    return outer + res.stdout


async def test_personal_certificate_mail_is_verified_like_a_seal(server, docs, cli, tmp_path):
    code, _, err = await cli("cert", "issue", "zhang.san")
    assert code == 0, err
    p12 = tmp_path / "zhang.p12"
    code, _, err = await cli("cert", "export", "zhang.san", "--p12", str(p12),
                             stdin="Export-pass-1\n")
    assert code == 0, err
    bundle = load_pkcs12(p12.read_bytes(), b"Export-pass-1")
    raw = sign_like_a_mail_client(tmp_path, bundle, "zhang.san@cx.example")
    await aiosmtplib.send(raw, sender="zhang.san@cx.example",
                          recipients=["stats.docs@cx.example"], hostname="127.0.0.1",
                          port=server.ports["smtp"], start_tls=False)
    [got] = await wait_inbox(server, "wang.wu@cx.example", 1)
    await wait_inbox(server, "zhao.liu@cx.example", 1)
    assert without_trace(got).startswith(b"X-CX-Seal-Verdict: signed;")
    assert b"signer=zhang.san@cx.example" in got.replace(b"\r\n ", b" ")
    assert b"not-a-document" in got.replace(b"\r\n ", b" ")
    ca = await docs.certs.ca_certificate()
    v = verify_message(got, TrustAnchors((ca,)), now=datetime.now(UTC))
    assert v.trusted and v.signer_email == "zhang.san@cx.example"
    # signed mail is never registered as a document
    assert await docs.list(unit="stats") == []

    if GPGSM is not None:
        await asyncio.to_thread(_gpgsm_verifies, tmp_path, ca, got)

    # the same person's certificate revoked: the next mail is held, never delivered
    code, out, _ = await cli("cert", "list", "--json")
    import json
    serial = next(c["serial"] for c in json.loads(out) if c["kind"] == "personal")
    assert (await cli("cert", "revoke", serial, "--reason", "affiliation-changed"))[0] == 0
    again = sign_like_a_mail_client(tmp_path, bundle, "zhang.san@cx.example")
    await aiosmtplib.send(again, sender="zhang.san@cx.example",
                          recipients=["stats.docs@cx.example"], hostname="127.0.0.1",
                          port=server.ports["smtp"], start_tls=False)

    async def held():
        rows = await docs.list(unit="stats", state="held")
        return rows or None
    [h] = await wait_for(held)
    assert h["verdict"] == "untrusted: revoked"
    assert len(await inbox(server, "wang.wu@cx.example")) == 1
    # the sender is told (a person, not a unit: to the person)
    notices = await wait_inbox(server, "zhang.san@cx.example", 1)
    assert any(b"X-CX-Doc-Held:" in n for n in notices)


async def test_personal_certificate_of_another_person_is_held(server, docs, cli, tmp_path):
    """Signed by zhang.san's certificate but sent as wang.wu: sender-mismatch."""
    assert (await cli("cert", "issue", "zhang.san"))[0] == 0
    p12 = tmp_path / "z.p12"
    assert (await cli("cert", "export", "zhang.san", "--p12", str(p12),
                      stdin="Export-pass-1\n"))[0] == 0
    bundle = load_pkcs12(p12.read_bytes(), b"Export-pass-1")
    raw = sign_like_a_mail_client(tmp_path, bundle, "li.si@cx.example")
    await aiosmtplib.send(raw, sender="li.si@cx.example", recipients=["stats.docs@cx.example"],
                          hostname="127.0.0.1", port=server.ports["smtp"], start_tls=False)

    async def held():
        return await docs.list(unit="stats", state="held") or None
    [h] = await wait_for(held)
    assert h["verdict"] == "untrusted: sender-mismatch" and h["reason"] == "sender-mismatch"
    # Issue #11 item 8: told to the holder of the certificate (a verified fact), never
    # to the address named only in the unsigned From field; nothing for the clerks
    [notice] = await wait_inbox(server, "zhang.san@cx.example", 1)
    assert b"X-CX-Doc-Held:" in notice
    assert await inbox(server, "li.si@cx.example") == []
    assert await inbox(server, "wang.wu@cx.example") == []


def _gpgsm_verifies(tmp: Path, ca, delivered: bytes) -> None:
    assert GPGSM is not None
    home = tmp / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    (tmp / "ca.pem").write_bytes(ca.public_bytes(Encoding.PEM))
    try:
        imported = subprocess.run([GPGSM, "--batch", "--import", str(tmp / "ca.pem")], env=env,
                                  capture_output=True, timeout=60, check=False)
        if imported.returncode != 0:
            pytest.skip(f"gpgsm cannot import a certificate here: {imported.stderr[-200:]!r}")
        fpr = ca.fingerprint(hashes.SHA1()).hex(":").upper()
        (home / "trustlist.txt").write_text(f"{fpr} S relax\n")
        found = find_signed(delivered)
        assert found is not None
        (tmp / "sig.p7s").write_bytes(found.signature_der)
        (tmp / "content.bin").write_bytes(found.content)
        res = subprocess.run([GPGSM, "--batch", "--disable-crl-checks",
                              "--disable-policy-checks", "--status-fd", "1", "--verify",
                              str(tmp / "sig.p7s"), str(tmp / "content.bin")],
                             env=env, capture_output=True, timeout=60, check=False)
        assert res.returncode == 0, res.stderr.decode()
        assert b"GOODSIG" in res.stdout and b"TRUST_FULLY" in res.stdout
    finally:
        gpgconf = shutil.which("gpgconf")
        if gpgconf:
            subprocess.run([gpgconf, "--kill", "gpg-agent"], env=env, capture_output=True,
                           timeout=30, check=False)


@pytest.mark.skipif(GPGSM is None, reason="gpgsm not installed")
async def test_gpgsm_verifies_delivered_sealed_document(server, docs, tmp_path):
    from mailrelay.documents.docmime import Attachment
    await docs.send(from_unit="finance", to=["stats"], title=SUBJECT, number="楚财函〔2026〕2号",
                    attachments=[Attachment("表.csv", "指标,数值\n".encode() * 500, "text/csv")])
    [got] = await wait_inbox(server, "wang.wu@cx.example", 1)
    await asyncio.to_thread(_gpgsm_verifies, tmp_path, await docs.certs.ca_certificate(), got)
