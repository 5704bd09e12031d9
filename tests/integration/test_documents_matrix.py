"""The whole trust matrix end to end: crafted documents arrive by plain SMTP at
`stats.docs@cx.example` (as from another organisation's relay), each is held with the
right reason, nothing reaches a clerk, `cxgw doc list --json` shows every one with its
reason, and the sending unit's clerks are told why."""

from __future__ import annotations

import email
import email.policy
import json
from datetime import UTC, datetime, timedelta

import aiosmtplib
import pytest

from directory.ca import create_root_ca, issue_unit_seal
from mailrelay.documents.docmime import Attachment, DocumentMeta
from mailrelay.documents.seal import Signer, prepare_document, seal_document, sign_detached
from tests.integration.mailutil import inbox, wait_inbox
from tests.integration.test_documents_helpers import (
    CA_PASSPHRASE,
    cli_runner,
    seal_city,
    wait_for,
    without_trace,
)

NUMBER = "楚财发〔2026〕7号"


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


def craft(signer: Signer, title: str, *, content: bytes = b"A" * 3000) -> bytes:
    meta = DocumentMeta(doc_id=DocumentMeta.new_id(), number=NUMBER, title=title,
                        from_unit="finance", to_units=("stats",))
    return seal_document(meta, "正文", [Attachment("a.txt", content, "text/plain")], signer,
                         from_addr="finance.docs@cx.example", to_addrs=["stats.docs@cx.example"],
                         now=datetime.now(UTC), domain="cx.example")


def wrong_digest(signer: Signer, title: str) -> bytes:
    """A signature that verifies, over signed attributes whose messageDigest is the
    digest of other content: the seal was made for something else."""
    meta = DocumentMeta(doc_id=DocumentMeta.new_id(), number=NUMBER, title=title,
                        from_unit="finance", to_units=("stats",))
    prepared = prepare_document(meta, "正文", [Attachment("a.txt", b"A" * 3000, "text/plain")],
                                from_addr="finance.docs@cx.example",
                                to_addrs=["stats.docs@cx.example"], now=datetime.now(UTC),
                                domain="cx.example")
    other = sign_detached(prepared.entity.replace(b"QUFB", b"QkJC", 1), signer)
    return prepared.finish(other)


def bad_signature(signer: Signer, title: str) -> bytes:
    """Digest right, signature value with one bit flipped."""
    from asn1crypto import cms as asn1_cms

    meta = DocumentMeta(doc_id=DocumentMeta.new_id(), number=NUMBER, title=title,
                        from_unit="finance", to_units=("stats",))
    prepared = prepare_document(meta, "正文", [Attachment("a.txt", b"A" * 3000, "text/plain")],
                                from_addr="finance.docs@cx.example",
                                to_addrs=["stats.docs@cx.example"], now=datetime.now(UTC),
                                domain="cx.example")
    info = asn1_cms.ContentInfo.load(sign_detached(prepared.entity, signer))
    si = info["content"]["signer_infos"][0]
    value = bytearray(si["signature"].native)
    value[10] ^= 0x01
    si["signature"] = bytes(value)
    return prepared.finish(info.dump(force=True))


def in_signed_entity(raw: bytes, old: bytes, new: bytes) -> bytes:
    """Replace ``old`` only inside the signed entity (after the first boundary)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert old in body
    return head + sep + body.replace(old, new, 1)


async def smtp_in(server, raw: bytes) -> None:
    await aiosmtplib.send(raw, sender="finance.docs@cx.example",
                          recipients=["stats.docs@cx.example"], hostname="127.0.0.1",
                          port=server.ports["smtp"], start_tls=False)


async def test_trust_matrix_end_to_end_over_smtp(server, docs, cli):
    held_events = []
    server.services.bus.on("document/held", held_events.append)
    assert docs.trust.sources == ("ocsp", "crl")  # OCSP (in-process) first
    finance = await docs.signer("finance")
    ca = await docs.certs.load_ca()
    now = datetime.now(UTC)
    foreign_ca = create_root_ca(now=now - timedelta(days=1))  # same names, other key
    foreign = issue_unit_seal(foreign_ca, unit_code="finance", unit_name="市财政局",
                              domain="cx.example", now=now)
    old = issue_unit_seal(ca, unit_code="finance", unit_name="市财政局", domain="cx.example",
                          now=now - timedelta(days=400), validity=timedelta(days=30))
    no_eku = issue_unit_seal(ca, unit_code="finance", unit_name="市财政局",
                             domain="cx.example", now=now, email_protection=False)
    # revoked: a newer finance seal, revoked before the document arrives
    await docs.certs.issue_seal("finance")
    revoked_seal = await docs.signer("finance")
    revoked_doc = craft(revoked_seal, "revoked")
    await docs.certs.revoke(f"{revoked_seal.certificate.serial_number:x}", "key-compromise")

    tampered_body = craft(finance, "tampered-body")
    tampered_body = in_signed_entity(tampered_body, b"QUFBQUFB", b"QkFBQUFB")
    tampered_head = in_signed_entity(craft(finance, "tampered-header"),
                                     b"X-CX-Doc-Urgency: normal", b"X-CX-Doc-Urgency: urgent")
    bad_sig = bad_signature(finance, "bad-signature")
    cases = {
        "tampered-body": (tampered_body, "bad-digest"),
        "tampered-header": (tampered_head, "bad-digest"),
        "wrong-digest": (wrong_digest(finance, "wrong-digest"), "bad-digest"),
        "bad-signature": (bad_sig, "bad-signature"),
        "foreign-ca": (craft(Signer(foreign.key, foreign.certificate,
                                    (foreign_ca.certificate,)), "foreign-ca"),
                       "untrusted-issuer"),
        "expired": (craft(Signer(old.key, old.certificate, (ca.certificate,)), "expired"),
                    "expired"),
        "revoked": (revoked_doc, "revoked"),
        "no-email-protection": (craft(Signer(no_eku.key, no_eku.certificate,
                                             (ca.certificate,)), "no-email-protection"),
                                "no-email-protection"),
        "no-signer-cert": (craft(Signer(finance.key, finance.certificate, (ca.certificate,),
                                        include_certificates=False), "no-signer-cert"),
                           "no-signer-cert"),
        "header-mismatch": (craft(finance, "header-mismatch").replace(
            b"X-CX-Doc-Urgency: normal", b"X-CX-Doc-Urgency: urgent", 1), "header-mismatch"),
    }
    for raw, _ in cases.values():
        await smtp_in(server, raw)

    async def all_held():
        code, out, err = await cli("doc", "list", "--unit", "stats", "--state", "held",
                                   "--json")
        assert code == 0, err
        rows = json.loads(out)
        return rows if len(rows) == len(cases) else None
    rows = await wait_for(all_held, timeout=30)
    assert rows, await docs.list()
    by_title = {r["title"]: r for r in rows}
    assert set(by_title) == set(cases)
    for title, (_, want) in cases.items():
        row = by_title[title]
        assert row["state"] == "held" and row["origin"] == "smtp"
        reason = row["verdict"].removeprefix("untrusted: ")
        assert reason in (want if isinstance(want, set) else {want}), (title, row)
        st = await docs.status(str(row["id"]))
        [r] = st["recipients"]
        assert r["state"] == "held" and r["verdict"] == "untrusted" and r["reason_text"]
        assert r["delivered_at"] is None
    # revocation was established through our OCSP responder's logic
    st = await docs.status(str(by_title["revoked"]["id"]))
    assert "source ocsp" in st["recipients"][0]["reason_text"]
    assert "key_compromise" in st["recipients"][0]["reason_text"]
    # nothing was delivered to any clerk of the receiving unit
    assert await inbox(server, "wang.wu@cx.example") == []
    assert await inbox(server, "zhao.liu@cx.example") == []
    assert len(held_events) == len(cases)
    # Issue #11 item 8: the sealing unit's clerk is told, once per document, only when a
    # verified fact names it: the certificate is one our CA issued to finance. A foreign
    # CA, a certificate missing or not in our table names finance only in unsigned
    # header fields: no notice (no backscatter).
    ours = {"tampered-body", "tampered-header", "wrong-digest", "bad-signature", "revoked",
            "header-mismatch"}
    notices = await wait_inbox(server, "zhang.san@cx.example", len(ours))
    assert len(notices) == len(ours)
    texts = []
    for n in notices:
        msg = email.message_from_bytes(n, policy=email.policy.default)
        assert msg["Auto-Submitted"] == "auto-generated"
        texts.append(msg.get_content())
    assert not any("untrusted-issuer" in t or "no-signer-cert" in t for t in texts)
    assert any("revoked" in t and "key_compromise" in t for t in texts)
    # a bad seal's Subject is unsigned: quoted as such, never in our Subject line
    assert any('unsigned Subject field, as sent: "tampered-body"' in t for t in texts)
    # `doc status` in the CLI prints the reason too
    code, out, _ = await cli("doc", "status", str(by_title["expired"]["id"]))
    assert code == 0 and "held at stats: expired" in out
    # and a good one over the same path is trusted and delivered (OCSP said good)
    await smtp_in(server, craft(finance, "good"))
    [msg] = await wait_inbox(server, "wang.wu@cx.example", 1)
    stamp = without_trace(msg).split(b"\r\n")[:3]  # the verdict field, folded
    assert b"revocation=ocsp" in b"".join(stamp)


async def test_revoked_through_the_crl(server, docs, cli):
    """The same revoked seal with the CRL as the only revocation source."""
    docs.trust.sources = ("crl",)
    docs.trust.invalidate()
    await docs.certs.issue_seal("finance")
    seal = await docs.signer("finance")
    raw = craft(seal, "revoked-crl")
    code, _, err = await cli("cert", "revoke", f"{seal.certificate.serial_number:x}",
                             "--reason", "superseded")
    assert code == 0, err
    await smtp_in(server, raw)

    async def held():
        code, out, _ = await cli("doc", "list", "--state", "held", "--json")
        return json.loads(out) if code == 0 and out.strip() != "[]" else None
    [row] = await wait_for(held)
    assert row["verdict"] == "untrusted: revoked" and row["title"] == "revoked-crl"
    st = await docs.status(str(row["id"]))
    assert "source crl" in st["recipients"][0]["reason_text"]
    assert await inbox(server, "wang.wu@cx.example") == []
