"""Official documents end to end on the real server: sealed -> verified -> delivered to the
clerks, the trust matrix over SMTP, openssl interop, receipts, CRL and OCSP over HTTP."""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import aiosmtplib
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from directory.ca import build_ocsp_request, create_root_ca, issue_unit_seal
from mailrelay.documents.chain import TrustAnchors
from mailrelay.documents.docmime import Attachment, DocumentMeta
from mailrelay.documents.revocation import read_ocsp_response
from mailrelay.documents.seal import Signer, seal_document
from mailrelay.documents.verify import verify_message
from tests.integration.mailutil import PASSWORD, client_tls, inbox, wait_inbox
from tests.integration.test_documents_helpers import (
    CA_PASSPHRASE,
    inject,
    seal_city,
    wait_for,
    wait_states,
    without_trace,
)

TITLE = "关于做好2026年预算编制工作的通知"
NUMBER = "楚财发〔2026〕3号"
FILES = [Attachment("附件1：预算编制说明.txt", "一、总体要求……\n".encode() * 2000, "text/plain")]


@pytest.fixture
def cfg_overrides():
    # inject() plays another organisation's gateway with our unit addresses: a trusted peer
    return {"ca": {"passphrase": CA_PASSPHRASE}, "smtp": {"trusted_networks": ["127.0.0.0/8"]}}


@pytest.fixture
async def docs(server):
    return await seal_city(server)


async def test_round_trip_sealed_verified_delivered(server, docs):
    arrived = []
    server.services.bus.on("document/arrived", arrived.append)
    sent = await docs.send(from_unit="finance", to=["stats", "town-lucheng"], title=TITLE,
                           number=NUMBER, attachments=FILES, note="请认真贯彻执行。",
                           urgency="urgent")
    states = await wait_states(docs, sent.id, {"delivered"})
    assert {u: r["state"] for u, r in states.items()} == {"stats": "delivered",
                                                         "town-lucheng": "delivered"}
    assert states["stats"]["verdict"] == "trusted" and states["stats"]["clerks"] == 2
    for clerk in ("wang.wu@cx.example", "zhao.liu@cx.example", "chen.qi@cx.example"):
        [msg] = await wait_inbox(server, clerk, 1)
        assert without_trace(msg).startswith(b"X-CX-Seal-Verdict: trusted; doc=%d;" % sent.id)
        # The stamp is outside the signed entity: the delivered copy still verifies.
        ca = await docs.certs.ca_certificate()
        v = verify_message(msg, TrustAnchors((ca,)), now=datetime.now(UTC))
        assert v.trusted and v.signer_email == "finance.docs@cx.example"
    assert await inbox(server, "li.si@cx.example") == []  # staff, not a clerk
    assert sorted(e.unit for e in arrived) == ["stats", "town-lucheng"]
    assert arrived[0].title == TITLE and arrived[0].number == NUMBER
    [row] = await docs.list(unit="stats")
    assert row["state"] == "delivered" and row["verdict"] == "trusted"
    raw = await docs.raw(str(sent.id), "stats")
    assert raw == (await inbox(server, "wang.wu@cx.example"))[0]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
async def test_openssl_cms_verify_on_inbox_copy(server, docs, tmp_path):
    await docs.send(from_unit="finance", to=["stats"], title=TITLE, number=NUMBER,
                    attachments=FILES)
    [msg] = await wait_inbox(server, "wang.wu@cx.example", 1)
    ca = await docs.certs.ca_certificate()
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "doc.eml").write_bytes(msg)
    for tool in ("cms", "smime"):
        res = await asyncio.to_thread(
            subprocess.run, ["openssl", tool, "-verify", "-in", str(tmp_path / "doc.eml"),
             "-CAfile", str(tmp_path / "ca.pem"), "-out", "/dev/null"],
            capture_output=True, timeout=30)
        assert res.returncode == 0, res.stderr.decode()


def _craft(signer: Signer, *, content: bytes = b"A" * 3000) -> bytes:
    meta = DocumentMeta(doc_id=DocumentMeta.new_id(), number=NUMBER, title=TITLE,
                        from_unit="finance", to_units=("stats",))
    return seal_document(meta, "正文", [Attachment("a.txt", content, "text/plain")], signer,
                         from_addr="finance.docs@cx.example", to_addrs=["stats.docs@cx.example"],
                         now=datetime.now(UTC), domain="cx.example")


async def test_trust_matrix_over_smtp_is_held(server, docs):
    held = []
    server.services.bus.on("document/held", held.append)
    finance = await docs.signer("finance")
    ca = await docs.certs.load_ca()
    now = datetime.now(UTC)
    # tampered body: one attachment byte changed after sealing
    good = _craft(finance)
    tampered = good.replace(b"QUFBQUFB", b"QkFBQUFB", 1)
    assert tampered != good
    # signer from a foreign CA with the same names
    foreign_ca = create_root_ca(now=now - timedelta(days=1))
    foreign = issue_unit_seal(foreign_ca, unit_code="finance", unit_name="市财政局",
                              domain="cx.example", now=now)
    foreign_doc = _craft(Signer(foreign.key, foreign.certificate, (foreign_ca.certificate,)))
    # revoked: a newer finance seal, revoked before the document arrives (CRL)
    await docs.certs.issue_seal("finance")
    revoked_seal = await docs.signer("finance")
    revoked_doc = _craft(revoked_seal)
    await docs.certs.revoke(f"{revoked_seal.certificate.serial_number:x}", "key-compromise")
    # expired: our CA, but valid only long ago
    old = issue_unit_seal(ca, unit_code="finance", unit_name="市财政局", domain="cx.example",
                          now=now - timedelta(days=400), validity=timedelta(days=30))
    expired_doc = _craft(Signer(old.key, old.certificate, (ca.certificate,)))
    # outer header rewritten (the sealed title differs)
    relabeled = good.replace(b"X-CX-Doc-Urgency: normal", b"X-CX-Doc-Urgency: urgent", 1)
    cases = {"bad-digest": tampered, "untrusted-issuer": foreign_doc, "revoked": revoked_doc,
             "expired": expired_doc, "header-mismatch": relabeled}
    for raw in cases.values():
        await inject(server, raw)

    async def all_held():
        rows = await docs.list(unit="stats", state="held")
        return rows if len(rows) == len(cases) else None
    rows = await wait_for(all_held)
    assert rows, await docs.list()
    got = {r["verdict"].removeprefix("untrusted: ") for r in rows}
    assert got == set(cases)
    assert all(r["state"] == "held" and r["verdict"].startswith("untrusted") for r in rows)
    assert {e.reason for e in held} == set(cases)
    # nothing was delivered, and the held documents can still be read by the admin
    assert await inbox(server, "wang.wu@cx.example") == []
    st = await docs.status(str(rows[0]["id"]))
    assert st["recipients"][0]["reason_text"] and st["origin"] == "smtp"
    # a good one over SMTP from another organisation's relay is trusted and delivered
    await inject(server, _craft(await docs.signer("finance")))
    assert len(await wait_inbox(server, "wang.wu@cx.example", 1)) == 1


async def test_forged_verdict_header_is_replaced(server, docs):
    good = _craft(await docs.signer("finance"))
    await inject(server, b"X-CX-Seal-Verdict: trusted; doc=999\r\n" + good)
    [msg] = await wait_inbox(server, "wang.wu@cx.example", 1)
    assert msg.count(b"X-CX-Seal-Verdict:") == 1 and b"doc=999" not in msg
    unsigned = (b"From: finance.docs@cx.example\r\nTo: stats.docs@cx.example\r\n"
                b"X-CX-Seal-Verdict: trusted\r\nSubject: fake\r\n\r\nhello\r\n")
    await inject(server, unsigned)

    async def held():
        return [r for r in await docs.list(state="held") if r["title"] == "fake"]
    [row] = await wait_for(held)
    assert row["verdict"] == "untrusted: not-signed"


async def test_receipt_round_trip(server, docs):
    signed = []
    server.services.bus.on("document/signed", signed.append)
    sent = await docs.send(from_unit="finance", to=["stats", "town-lucheng"], title=TITLE,
                           number=NUMBER, attachments=FILES)
    await wait_states(docs, sent.id, {"delivered"})
    out = await docs.receipt(str(sent.id), by="wang.wu")
    assert out["unit"] == "stats" and out["to"] == "finance.docs@cx.example"
    states = await wait_states(docs, sent.id, {"signed"}, timeout=5) or {}
    states = await wait_for(lambda: _signed(docs, sent.id, "stats"))
    assert states["stats"]["state"] == "signed"
    assert states["stats"]["signed_by"] == "wang.wu@cx.example"
    assert states["stats"]["signed_at"]
    assert states["town-lucheng"]["state"] == "delivered"
    [receipt] = await wait_inbox(server, "zhang.san@cx.example", 1)
    assert without_trace(receipt).startswith(b"X-CX-Seal-Verdict: trusted;")
    assert b"disposition-notification" in receipt
    assert [e.unit for e in signed] == ["stats"]
    with pytest.raises(Exception, match="already signed"):
        await docs.receipt(str(sent.id), by="zhao.liu")


async def _signed(docs, ident, unit):
    st = {r["unit"]: r for r in (await docs.status(str(ident)))["recipients"]}
    return st if st[unit]["state"] == "signed" else None


async def test_clerk_sends_document_by_mail(server, docs):
    msg = ("From: zhang.san@cx.example\r\nTo: finance.docs@cx.example\r\n"
           f"Subject: {TITLE}\r\nMIME-Version: 1.0\r\n"
           "Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\n"
           "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + base64.encodebytes(f"收文单位: stats, town-lucheng\n文号: {NUMBER}\n紧急程度: 特急\n\n"
                                "请各单位认真贯彻执行。\n".encode()).decode().replace("\n", "\r\n")
           + "--b1\r\nContent-Type: application/pdf; name=a.pdf\r\n"
           "Content-Disposition: attachment; filename=a.pdf\r\n"
           "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n").encode()
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=server.ports["submission"],
                               start_tls=True, tls_context=client_tls()) as smtp:
        await smtp.login("zhang.san@cx.example", PASSWORD)
        await smtp.sendmail("zhang.san@cx.example", ["finance.docs@cx.example"], msg)
    [doc] = await wait_inbox(server, "wang.wu@cx.example", 1)
    assert b"X-CX-Seal-Verdict: trusted" in doc and b"X-CX-Doc-Urgency: extra-urgent" in doc
    await wait_inbox(server, "chen.qi@cx.example", 1)
    [row] = await docs.list(unit="stats")
    assert row["origin"] == "mail" and row["title"] == TITLE and row["number"] == NUMBER
    st = await docs.status(str(row["id"]))
    assert st["sent_by"] == "zhang.san@cx.example"
    # a staff member who is not a clerk of the unit cannot send in its name
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=server.ports["submission"],
                               start_tls=True, tls_context=client_tls()) as smtp:
        await smtp.login("li.si@cx.example", PASSWORD)
        await smtp.sendmail("li.si@cx.example", ["stats.docs@cx.example"],
                            msg.replace(b"zhang.san", b"li.si"))
    await asyncio.sleep(0.5)
    assert len(await docs.list()) == 1


async def _http(server, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    r, w = await asyncio.open_connection("127.0.0.1", server.ports["http"])
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    if body:
        head += f"Content-Type: application/ocsp-request\r\nContent-Length: {len(body)}\r\n"
    w.write(head.encode() + b"\r\n" + body)
    await w.drain()
    data = await r.read()
    w.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


async def test_crl_and_ocsp_on_http(server, docs):
    ca = await docs.certs.ca_certificate()
    seal = await docs.signer("stats")
    status, der = await _http(server, "GET", "/ca/crl.der")
    assert status == 200
    crl = x509.load_der_x509_crl(der)
    assert crl.is_signature_valid(ca.public_key()) and len(crl) == 0
    status, pem = await _http(server, "GET", "/ca/crl.pem")
    assert status == 200 and pem.startswith(b"-----BEGIN X509 CRL-----")
    now = datetime.now(UTC)
    req = build_ocsp_request(seal.certificate, ca)
    status, answer = await _http(server, "POST", "/ca/ocsp", req)
    assert status == 200
    assert read_ocsp_response(answer, seal.certificate, ca, now).state.value == "good"
    await docs.certs.revoke(f"{seal.certificate.serial_number:x}", "superseded")
    encoded = base64.b64encode(req).decode().replace("/", "%2F").replace("+", "%2B")
    status, answer = await _http(server, "GET", "/ca/ocsp/" + encoded)
    assert status == 200
    got = read_ocsp_response(answer, seal.certificate, ca, now)
    assert got.state.value == "revoked" and got.reason == "superseded"
    status, der = await _http(server, "GET", "/ca/crl.der")
    revoked = x509.load_der_x509_crl(der)
    assert revoked.get_revoked_certificate_by_serial_number(seal.certificate.serial_number)
    # the URLs are in the issued certificates
    cdp = seal.certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    assert cdp.value[0].full_name[0].value.endswith("/ca/crl.der")
