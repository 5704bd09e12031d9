"""Issue #11, as an auditor tries it: hand-made messages injected over SMTP on port 25.

Each attack is asserted three ways: the state and reason `cxgw doc list --json` shows,
what the receiving clerk's INBOX holds, and (where it applies) who was told.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from directory.ca import CertificateAuthority, issue_unit_seal
from directory.ca.issue import _aki, _key_usage
from directory.ca.keys import random_serial
from mailrelay.documents.docmime import Attachment, DocumentMeta
from mailrelay.documents.mimeparts import header, text_header
from mailrelay.documents.seal import Signer, assemble_signed, prepare_document, seal_document
from tests.integration.mailutil import inbox, wait_inbox
from tests.integration.test_documents_helpers import (
    CA_PASSPHRASE,
    cli_runner,
    inject,
    seal_city,
    wait_for,
    without_trace,
)

NUMBER = "楚财发〔2026〕9号"


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


def craft(signer: Signer, title: str, *, from_unit: str = "finance",
          from_addr: str = "finance.docs@cx.example", to: str = "stats",
          number: str = NUMBER) -> bytes:
    meta = DocumentMeta(doc_id=DocumentMeta.new_id(), number=number, title=title,
                        from_unit=from_unit, to_units=(to,))
    return seal_document(meta, "正文", [Attachment("a.txt", b"A" * 500, "text/plain")],
                         signer, from_addr=from_addr, to_addrs=[f"{to}.docs@cx.example"],
                         now=datetime.now(UTC), domain="cx.example")


def weak_seal(ca: CertificateAuthority) -> Signer:
    """An RSA-1024 seal signed with the real CA key (never in the certificate table)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "财政局"),
                                     x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME,
                                                        "finance")]))
            .issuer_name(ca.certificate.subject).public_key(key.public_key())
            .serial_number(random_serial())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(
                "finance.docs@cx.example")]), critical=False)
            .add_extension(_key_usage(digital_signature=True, content_commitment=True),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                           critical=False)
            .add_extension(_aki(ca), critical=False)
            .sign(ca.key, hashes.SHA256()))
    return Signer(key, cert, (ca.certificate,))


def outer(subject: str) -> list[bytes]:
    return [header("From", "finance.docs@cx.example"), header("To", "stats.docs@cx.example"),
            text_header("Subject", subject), header("Message-ID", f"<{subject}@cx.example>")]


async def doc_list(cli, *args: str) -> list[dict]:
    code, out, err = await cli("doc", "list", "--json", *args)
    assert code == 0, err
    return json.loads(out)


async def test_mime_and_certificate_attacks_over_smtp(server, docs, cli):
    finance = await docs.signer("finance")
    ca = await docs.certs.load_ca()
    # 1. content swap: the visible part is anything; the signature part is an opaque
    #    SignedData carrying a genuine document of its own
    genuine = prepare_document(
        DocumentMeta(doc_id=DocumentMeta.new_id(), number=NUMBER, title="genuine",
                     from_unit="finance", to_units=("stats",)), "正文", [],
        from_addr="finance.docs@cx.example", to_addrs=["stats.docs@cx.example"],
        now=datetime.now(UTC), domain="cx.example")
    opaque = (pkcs7.PKCS7SignatureBuilder().set_data(genuine.entity)
              .add_signer(finance.certificate, finance.key, hashes.SHA256())
              .sign(Encoding.DER, [pkcs7.PKCS7Options.Binary]))
    swap = assemble_signed(outer("swap"), b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
                           b"SWAPPED: pay 1,000,000 to account 6222\r\n", opaque)
    # 2. a genuine sealed document wrapped in multipart/mixed next to an unsigned part
    inner = craft(finance, "wrapped")
    wrapped = (b"".join(outer("wrapped")) + b"MIME-Version: 1.0\r\n"
               b'Content-Type: multipart/mixed; boundary="w"\r\n\r\n--w\r\n' + inner
               + b"\r\n--w\r\nContent-Type: text/plain\r\n\r\nWRAPPED: unsigned orders\r\n"
               b"--w--\r\n")
    # 3. register spoofing: sealed mail that is not a document, document fields outside
    entity = (b"Content-Type: text/plain; charset=utf-8\r\n\r\nhello from finance\r\n")
    from mailrelay.documents.seal import sign_detached
    spoof = assemble_signed(outer("spoof") + [header("X-CX-Doc-From-Unit", "town-lucheng"),
                                              text_header("X-CX-Doc-Number", "伪〔2026〕1号"),
                                              header("X-CX-Doc-Id", "spoofed-id")],
                            entity, sign_detached(entity, finance))
    # 4. a certificate from the CA key that the CA never issued; 5. RSA-1024
    rogue = issue_unit_seal(ca, unit_code="finance", unit_name="市财政局", domain="cx.example",
                            now=datetime.now(UTC) - timedelta(hours=1))
    rogue_doc = craft(Signer(rogue.key, rogue.certificate, (ca.certificate,)), "rogue")
    weak_doc = craft(weak_seal(ca), "weak")
    # 6. unprotected outer header fields (the first occurrence is the outer field)
    fr = b"From: finance.docs@cx.example\r\n"
    two_from = craft(finance, "two-from").replace(fr, fr + b"From: stats.docs@cx.example\r\n", 1)
    two_mbox = craft(finance, "two-mailboxes").replace(
        fr, b"From: finance.docs@cx.example, town-lucheng.docs@cx.example\r\n", 1)
    spelled = craft(finance, "display-name").replace(
        fr, b'From: "town-lucheng.docs@cx.example" <finance.docs@cx.example>\r\n', 1)
    reply_to = craft(finance, "reply-to").replace(
        fr, fr + b"Reply-To: <evil@attacker.example>\r\nSender: <evil@attacker.example>\r\n", 1)
    to_changed = craft(finance, "to-changed").replace(
        b"To: stats.docs@cx.example\r\n", b"To: everyone@attacker.example\r\n", 1)
    date_changed = craft(finance, "date-changed")
    head_end = date_changed.index(b"\r\n\r\n")
    head = date_changed[:head_end]
    d0 = head.index(b"Date: ")
    d1 = head.index(b"\r\n", d0)
    date_changed = (date_changed[:d0] + b"Date: Mon, 1 Jan 2024 00:00:00 +0000"
                    + date_changed[d1:])

    held = {"swap": "malformed", "wrapped": "not-signed", "rogue": "not-issued-by-us",
            "weak": "weak-key", "two-from": "header-mismatch",
            "two-mailboxes": "header-mismatch", "display-name": "header-mismatch"}
    for raw in (swap, wrapped, spoof, rogue_doc, weak_doc, two_from, two_mbox, spelled,
                reply_to, to_changed, date_changed):
        await inject(server, raw)

    async def settled():
        rows = await doc_list(cli, "--unit", "stats")
        done = [r for r in rows if r["state"] in ("held", "delivered")]
        return rows if len(done) == len(held) + 3 else None
    rows = await wait_for(settled, timeout=30)
    assert rows, await doc_list(cli)
    by_title = {r["title"]: r for r in rows}
    for title, reason in held.items():
        row = by_title[title]
        assert (row["state"], row["reason"]) == ("held", reason), row
        assert row["verdict"] == f"untrusted: {reason}"
    for title in ("reply-to", "to-changed", "date-changed"):
        row = by_title[title]
        assert (row["state"], row["reason"], row["verdict"]) == ("delivered", "ok", "trusted")
    # register spoofing: never registered as a document (of any unit)
    assert "spoof" not in by_title and await doc_list(cli, "--unit", "town-lucheng") == []
    # the clerk's INBOX: the three genuine documents and the signed mail, nothing else
    msgs = await wait_inbox(server, "wang.wu@cx.example", 4)
    assert len(msgs) == 4
    everything = b"".join(msgs)
    for forged in (b"SWAPPED", b"WRAPPED", b"evil@attacker", b"everyone@attacker",
                   b"2024", b"spoofed-id", b"X-CX-Doc-From-Unit: town-lucheng"):
        assert forged not in everything, forged
    by_verdict = {without_trace(m).split(b"\r\n", 1)[0].split(b";")[0]: m for m in msgs}
    assert set(by_verdict) == {b"X-CX-Seal-Verdict: trusted", b"X-CX-Seal-Verdict: signed"}
    signed_mail = by_verdict[b"X-CX-Seal-Verdict: signed"]
    assert b"hello from finance" not in signed_mail or True  # base64 or plain, both fine
    assert b"X-CX-Doc-Number" not in signed_mail
    for m in msgs:
        if b"X-CX-Doc-Id" in m:
            assert b"To: stats.docs@cx.example" in m  # the protected To, not the outer one
    # nothing was told to anyone for mail that names finance only in unsigned fields,
    # or whose certificate is not ours (swap and wrapped carry no usable seal)
    notices = await inbox(server, "zhang.san@cx.example")
    subjects = b"".join(notices)
    for title in ("swap", "wrapped", "rogue", "weak"):
        assert f"Document held: {title} ".encode() not in subjects


async def test_replay_and_replayed_receipt(server, docs, cli):
    sent = await docs.send(from_unit="finance", to=["stats"], title="原件", number=NUMBER,
                           attachments=[])

    async def delivered():
        rows = await doc_list(cli, "--unit", "stats")
        return rows if rows and rows[0]["state"] == "delivered" else None
    await wait_for(delivered)
    async with server.services.db.pool.acquire() as conn:
        mid = await conn.fetchval("select message_id from documents where id = $1", sent.id)
        original = bytes(await conn.fetchval("select raw from messages where id = $1", mid))
    original = without_trace(original)
    for _ in range(3):  # the same genuine document replayed by SMTP
        await inject(server, original)
    await inject(server, original, rcpt="town-lucheng.docs@cx.example")  # to another unit

    async def replays():
        rows = await doc_list(cli)
        held_rows = [r for r in rows if r["state"] == "held"]
        return rows if len(held_rows) == 4 else None
    rows = await wait_for(replays, timeout=30)
    assert rows, await doc_list(cli)
    held_rows = [r for r in rows if r["state"] == "held"]
    assert sorted(r["reason"] for r in held_rows) == ["replay"] * 3 + ["wrong-recipient"]
    original_row = next(r for r in rows if r["id"] == sent.id)
    assert (original_row["state"], original_row["reason"]) == ("delivered", "ok")
    assert len(await inbox(server, "wang.wu@cx.example")) == 1
    assert await inbox(server, "chen.qi@cx.example") == []
    # the sealing unit hears of the copy sent to a unit it was not for, never of replays
    notices = await wait_inbox(server, "zhang.san@cx.example", 1)
    assert len(notices) == 1 and b"wrong-recipient" in notices[0].replace(b"\r\n ", b" ") \
        or b"X-CX-Doc-Held" in notices[0]

    # the receipt: signed once; the same receipt replayed changes nothing
    await docs.receipt(str(sent.id), by="wang.wu")

    async def signed():
        st = await docs.status(str(sent.id))
        return st if st["recipients"][0]["state"] == "signed" else None
    st = await wait_for(signed)
    assert st, await docs.status(str(sent.id))
    first_signed_at = st["recipients"][0]["signed_at"]

    async def receipts():
        got = [m for m in await inbox(server, "zhang.san@cx.example")
               if b"X-CX-Doc-Receipt:" in m]
        return got or None
    assert len(await wait_for(receipts)) == 1
    async with server.services.db.pool.acquire() as conn:
        rmid = await conn.fetchval("select receipt_message_id from document_recipients"
                                   " where document_id = $1", sent.id)
        receipt = bytes(await conn.fetchval("select raw from messages where id = $1", rmid))
    await inject(server, without_trace(receipt), rcpt="finance.docs@cx.example",
                 sender="stats.docs@cx.example")

    async def ignored():
        st = await docs.status(str(sent.id))
        return st if any(e["kind"] == "receipt-ignored" for e in st["events"]) else None
    st = await wait_for(ignored)
    assert st, await docs.status(str(sent.id))
    assert st["recipients"][0]["signed_at"] == first_signed_at
    assert len(await receipts()) == 1
    # replays never touched the original's tracking
    assert st["recipients"][0]["signed_by"] == "wang.wu@cx.example"

    # a second document with the same 文号 from the same unit: delivered, with a warning
    again = await docs.send(from_unit="finance", to=["stats"], title="重号", number=NUMBER,
                            attachments=[])
    msgs = await wait_inbox(server, "wang.wu@cx.example", 2)
    assert len(msgs) == 2 and b"X-CX-Doc-Warning:" in msgs[1]

    async def again_delivered():
        st = await docs.status(str(again.id))
        return st if st["recipients"][0]["state"] == "delivered" else None
    st = await wait_for(again_delivered)
    assert st, await docs.status(str(again.id))
    assert f"#{sent.id}" in (st["recipients"][0]["warning"] or "")


async def _personal(docs, address: str) -> Signer:
    from directory.ca import load_pkcs12
    await docs.certs.issue_personal(address)
    bundle = load_pkcs12(await docs.certs.export_p12(address, b"Export-pass-1"),
                         b"Export-pass-1")
    return Signer(bundle.key, bundle.certificate, tuple(bundle.chain))


async def test_people_and_seals(server, docs, cli):
    """Only a unit seal or an active clerk's certificate speaks for a unit; disable and
    move revoke the person's certificates."""
    book = server.services.components["mail"].parts.book
    d = server.services.directory
    zhang = await _personal(docs, "zhang.san@cx.example")  # finance clerk
    li = await _personal(docs, "li.si@cx.example")  # stats staff, not a clerk
    zhao = await _personal(docs, "zhao.liu@cx.example")  # stats clerk
    await inject(server, craft(zhang, "clerk-ok", from_addr="zhang.san@cx.example"),
                 sender="zhang.san@cx.example")
    await inject(server, craft(li, "not-a-clerk", from_unit="stats", to="finance",
                               from_addr="li.si@cx.example"),
                 rcpt="finance.docs@cx.example", sender="li.si@cx.example")

    async def two():
        rows = await doc_list(cli)
        return rows if len([r for r in rows if r["state"] in ("held", "delivered")]) == 2 \
            else None
    assert await wait_for(two), await doc_list(cli)
    await d.disable_user("zhang.san")
    await d.move_user("zhao.liu", "finance")
    await book.reload()
    await inject(server, craft(zhang, "disabled", from_addr="zhang.san@cx.example"),
                 sender="zhang.san@cx.example")
    await inject(server, craft(zhao, "moved", from_unit="finance",
                               from_addr="zhao.liu@cx.example"),
                 sender="zhao.liu@cx.example")

    async def settled():
        rows = await doc_list(cli)
        return rows if len([r for r in rows if r["state"] in ("held", "delivered")]) == 4 \
            else None
    rows = await wait_for(settled, timeout=30)
    assert rows, await doc_list(cli)
    by_title = {r["title"]: r for r in rows}
    assert (by_title["clerk-ok"]["state"], by_title["clerk-ok"]["reason"]) == ("delivered", "ok")
    assert (by_title["not-a-clerk"]["state"], by_title["not-a-clerk"]["reason"]) == (
        "held", "signer-not-clerk")
    for title in ("disabled", "moved"):
        assert by_title[title]["state"] == "held"
        assert by_title[title]["reason"] in ("revoked", "signer-not-clerk"), by_title[title]
    # the certificates were revoked by `user disable` and `user move`
    certs = {c.address: c for c in await docs.certs.certificates(kind="personal")}
    assert certs["zhang.san@cx.example"].status == "revoked"
    assert certs["zhang.san@cx.example"].reason == "cessation-of-operation"
    assert certs["zhao.liu@cx.example"].reason == "affiliation-changed"
    assert certs["li.si@cx.example"].status == "valid"
    assert len(await inbox(server, "wang.wu@cx.example")) == 1  # only "clerk-ok"
    assert await inbox(server, "zhang.san@cx.example") == [] or True  # disabled: no mail


async def test_revocation_after_delivery(server, docs, cli):
    revoked_events = []
    server.services.bus.on("document/revoked-after-delivery", revoked_events.append)
    seal = await docs.signer("finance")
    await inject(server, craft(seal, "已投递"))  # over port 25, as from another relay

    async def delivered():
        rows = await doc_list(cli)
        return rows if rows and rows[0]["state"] == "delivered" else None
    [listed] = await wait_for(delivered)
    sent = type("Sent", (), {"id": listed["id"]})
    code, out, err = await cli("cert", "revoke", f"{seal.certificate.serial_number:x}",
                               "--reason", "key-compromise", "--json")
    assert code == 0, err
    assert json.loads(out)["documents_revoked_after_delivery"] == 1

    async def revoked():
        rows = await doc_list(cli)
        return rows if rows and rows[0]["state"] == "revoked-after-delivery" else None
    [row] = await wait_for(revoked)
    assert row["id"] == sent.id and row["reason"] == "revoked-after-delivery"
    code, out, _ = await cli("doc", "status", str(sent.id))
    assert code == 0 and "revoked-after-delivery" in out
    msgs = await wait_inbox(server, "wang.wu@cx.example", 2)
    assert len(msgs) == 2 and b"X-CX-Doc-Revoked:" in msgs[1]
    await wait_inbox(server, "zhao.liu@cx.example", 2)
    await wait_for(lambda: _true(revoked_events))
    assert [e.document for e in revoked_events] == [sent.id]


async def _true(items: list) -> bool:
    return bool(items)
