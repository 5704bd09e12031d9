"""Pure parts of the document service: origin detection, clerk mail, stamping, helpers."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from cxkernel.config import CAConfig
from cxkernel.errors import Invalid
from directory.ca import RevocationReason
from directory.certs import parse_reason, parse_serial, passphrase_from
from mailrelay.documents.arrival import examine, is_receipt, stamp, unit_of, verdict_value
from mailrelay.documents.docmime import Urgency, parse_document
from mailrelay.documents.mailform import (
    is_authenticated_submission,
    is_local_docs,
    parse_submission,
    submission_protocol,
)
from mailrelay.documents.service import overall_state, verdict_summary
from mailrelay.documents.verify import verify_message
from mailrelay.submit import ClientInfo, Submission, Submitter

from .conftest import NOW


def _received(client: ClientInfo, source: str, qid: str = "19B2F3A81C4E7D2A") -> bytes:
    sub = Submitter.__new__(Submitter)
    sub.hostname = "mail.cx.example"
    s = Submission("a@cx.example", ["finance.docs@cx.example"], b"", client, source)
    return sub.received(s, qid, datetime(2026, 3, 2, tzinfo=UTC))


def test_origin_from_our_received_field():
    qid = "19B2F3A81C4E7D2A"
    auth = _received(ClientInfo("ESMTPSA", "pc", "10.0.0.5", "pc", "zhang.san@cx.example",
                                "TLSv1.3 TLS_AES_256_GCM_SHA384"), "submission")
    assert submission_protocol(auth + b"From: x\r\n", qid) == ("ESMTPSA", "pc (pc [10.0.0.5])")
    assert is_authenticated_submission(auth, qid)
    assert not is_authenticated_submission(auth, "19B2F3A81C4E7D2B")  # another queue entry
    plain = _received(ClientInfo("ESMTP", "mx.example.org", "192.0.2.1"), "smtp")
    assert not is_authenticated_submission(plain, qid)
    local = _received(ClientInfo(protocol="LOCAL"), "docs")
    assert is_local_docs(local, qid) and not is_local_docs(plain, qid)
    # a forged field further down never counts: only the first field is ours
    assert not is_authenticated_submission(plain + auth, qid)


def _clerk_mail(text: str, headers: str = "") -> bytes:
    body = base64.encodebytes(text.encode()).decode().replace("\n", "\r\n")
    return ("From: zhang.san@cx.example\r\nTo: finance.docs@cx.example\r\n"
            f"Subject: =?utf-8?b?{base64.b64encode('关于开会的通知'.encode()).decode()}?=\r\n"
            f"{headers}MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            "--b\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: base64\r\n\r\n{body}--b\r\n"
            "Content-Type: application/pdf\r\n"
            "Content-Disposition: attachment; filename*=utf-8''%E9%99%84%E4%BB%B6.pdf\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n").encode()


def test_parse_clerk_submission_from_body_lines():
    req = parse_submission(_clerk_mail("收文单位：stats，town-lucheng\n文号: 楚财发〔2026〕3号\n"
                                       "紧急程度: 加急\n\n请准时参加。\n"))
    assert req.title == "关于开会的通知" and req.number == "楚财发〔2026〕3号"
    assert req.to == ("stats", "town-lucheng") and req.urgency is Urgency.URGENT
    assert req.note == "请准时参加。"
    [att] = req.attachments
    assert att.filename == "附件.pdf" and att.content == b"%PDF-1.4\n"


def test_parse_clerk_submission_from_headers_and_errors():
    req = parse_submission(_clerk_mail("正文\n", "X-CX-Doc-To: all\r\nX-CX-Doc-Number: 3\r\n"))
    assert req.to == ("all",) and req.number == "3" and req.note == "正文"
    with pytest.raises(Invalid, match="receiving units"):
        parse_submission(_clerk_mail("文号: 1\n\n正文\n"))
    with pytest.raises(Invalid, match="number"):
        parse_submission(_clerk_mail("收文单位: stats\n\n正文\n"))
    with pytest.raises(Invalid, match="urgency"):
        parse_submission(_clerk_mail("收文单位: stats\n文号: 1\n紧急程度: 很急\n"))


def test_delivered_copy_is_rebuilt_from_verified_bytes_and_still_verifies(city, sealed):
    """Forged verdict fields, Reply-To, Sender and a preamble never reach the clerk; the
    header shown comes from the signed entity; the copy still verifies."""
    from mailrelay.documents.chain import VerifyCache
    raw = sealed()
    head, _, body = raw.partition(b"\r\n\r\n")
    forged = (b"X-CX-Seal-Verdict: trusted; forged\r\n\tcontinued\r\n"
              b"Reply-To: <evil@attacker.example>\r\nSender: <evil@attacker.example>\r\n"
              + head + b"\r\n\r\nForged preamble: pay to account 1234\r\n" + body
              + b"\r\nForged epilogue\r\n")
    ex = examine(forged, city.anchors, NOW, None, VerifyCache())
    assert ex.verdict.trusted and ex.delivered is not None and ex.mismatches == ()
    out = stamp(ex.delivered, verdict_value("trusted", 42, ex.verdict))
    assert out.count(b"X-CX-Seal-Verdict") == 1 and b"forged" not in out.lower()
    assert b"evil@" not in out and b"Forged" not in out
    assert out.startswith(b"X-CX-Seal-Verdict: trusted; doc=42; signer=finance.docs@cx.example;")
    assert verify_message(out, city.anchors, now=NOW).trusted


def test_examine_reads_the_document_and_outer_mismatch(city, sealed):
    from mailrelay.documents.chain import VerifyCache
    raw = sealed()
    ex = examine(raw, city.anchors, NOW, None, VerifyCache())
    assert ex.verdict.trusted and ex.meta is not None and ex.mismatches == ()
    assert ex.meta == parse_document(ex.verdict.content).meta  # the fast reader agrees
    assert ex.outer["Subject"] == ex.meta.title
    relabeled = raw.replace(b"X-CX-Doc-Urgency: urgent", b"X-CX-Doc-Urgency: normal", 1)
    ex = examine(relabeled, city.anchors, NOW, None, VerifyCache())
    assert ex.verdict.trusted and ex.mismatches == ("X-CX-Doc-Urgency",)
    assert not is_receipt(raw) and is_receipt(b"From: a\r\nX-CX-Doc-Receipt: signed\r\n\r\n")
    assert unit_of("Town-Lucheng.docs@cx.example") == "town-lucheng"


def test_summaries():
    assert overall_state(["delivered", "held"]) == "held"
    assert overall_state(["signed", "delivered"]) == "delivered"
    assert overall_state(["signed"]) == "signed" and overall_state([]) == "queued"
    assert verdict_summary(["held", "delivered"], ["revoked", "ok"]) == "untrusted: revoked"
    assert verdict_summary(["delivered"], ["ok"]) == "trusted"
    assert verdict_summary(["queued"], [""]) == "pending"


def test_passphrase_serial_reason(tmp_path):
    assert passphrase_from(CAConfig(), env={}) is None
    assert passphrase_from(CAConfig(passphrase="p"), env={}) == b"p"
    assert passphrase_from(CAConfig(passphrase="p"), env={"CXGW_CA_PASSPHRASE": "e"}) == b"e"
    f = tmp_path / "pass"
    f.write_text("from-file\nignored\n")
    assert passphrase_from(CAConfig(passphrase_file=str(f)), env={}) == b"from-file"
    with pytest.raises(Invalid):
        passphrase_from(CAConfig(passphrase_file=str(tmp_path / "missing")), env={})
    assert parse_serial("0x4F:A0") == parse_serial("4fa0") == "4fa0"
    with pytest.raises(Invalid):
        parse_serial("xyz")
    assert parse_reason("key-compromise") is RevocationReason.KEY_COMPROMISE
    with pytest.raises(Invalid):
        parse_reason("remove-from-crl")
    with pytest.raises(Invalid):
        parse_reason("bored")


def test_outer_from_must_be_one_mailbox_the_signers():
    from mailrelay.documents.arrival import from_problems
    me = ["finance.docs@cx.example"]
    assert from_problems(b"From: finance.docs@cx.example\r\n", me) == ()
    assert from_problems(b'From: "Finance" <finance.docs@cx.example>\r\n', me) == ()
    assert from_problems(b"From: a@x\r\nFrom: finance.docs@cx.example\r\n", me)
    assert from_problems(b"From: finance.docs@cx.example, stats.docs@cx.example\r\n", me)
    assert from_problems(b'From: "stats.docs@cx.example" <finance.docs@cx.example>\r\n', me)
    assert from_problems(b"From: stats.docs@cx.example\r\n", me)
    assert from_problems(b"Subject: no from\r\n", me)


def test_read_receipt_parsing():
    from mailrelay.documents.clerkmdn import is_mdn, read_receipt_request
    raw = (b"From: a@cx.example\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/report; report-type="disposition-notification";'
           b' boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nread\r\n'
           b"--b\r\nContent-Type: message/disposition-notification\r\n\r\n"
           b"Final-Recipient: rfc822;a@cx.example\r\nOriginal-Message-ID: <m1@cx>\r\n"
           b"Disposition: manual-action/MDN-sent-manually; displayed\r\n\r\n--b--\r\n")
    assert is_mdn(raw) and not is_mdn(b"Content-Type: text/plain\r\n\r\nx")
    got = read_receipt_request(raw)
    assert got.original_message_id == "<m1@cx>" and got.displayed
    deleted = read_receipt_request(raw.replace(b"; displayed", b"; deleted"))
    assert not deleted.displayed
    with pytest.raises(ValueError):
        read_receipt_request(raw.replace(b"Original-Message-ID: <m1@cx>\r\n", b""))
