"""Issue #11 item 7: a clerk signs for a document from the mail client, with the read
receipt (RFC 8098 MDN) the document asks for (Disposition-Notification-To), sent like
Thunderbird sends it: an unsigned multipart/report over authenticated submission."""

from __future__ import annotations

import asyncio
import email
import email.policy
import shutil
import subprocess

import aiosmtplib
import pytest

from tests.integration.mailutil import PASSWORD, client_tls, inbox, wait_inbox
from tests.integration.test_documents_helpers import (
    CA_PASSPHRASE,
    seal_city,
    wait_for,
    without_trace,
)

OPENSSL = shutil.which("openssl")


@pytest.fixture
def cfg_overrides():
    return {"ca": {"passphrase": CA_PASSPHRASE}}


@pytest.fixture
async def docs(server):
    return await seal_city(server)


def thunderbird_mdn(sender: str, to: str, original_id: str, subject: str) -> bytes:
    """What Thunderbird writes when the reader agrees to send a return receipt."""
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: =?UTF-8?B?5bey6K+7?= {subject}\r\n"
            "MIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type="disposition-notification";\r\n'
            ' boundary="------------MDN1"\r\n\r\n'
            "This is a multi-part message in MIME format.\r\n"
            "--------------MDN1\r\nContent-Type: text/plain; charset=UTF-8\r\n"
            "Content-Transfer-Encoding: 7bit\r\n\r\n"
            "This is a Return Receipt for the mail that you sent.\r\n\r\n"
            "--------------MDN1\r\n"
            'Content-Type: message/disposition-notification; name="MDNPart2.txt"\r\n'
            "Content-Disposition: inline\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
            "Reporting-UA: cx.example; Mozilla Thunderbird\r\n"
            f"Final-Recipient: rfc822;{sender}\r\n"
            f"Original-Message-ID: {original_id}\r\n"
            "Disposition: manual-action/MDN-sent-manually; displayed\r\n\r\n"
            "--------------MDN1\r\n"
            'Content-Type: text/rfc822-headers; name="MDNPart3.txt"\r\n'
            "Content-Disposition: inline\r\n\r\n"
            f"Message-ID: {original_id}\r\n\r\n"
            "--------------MDN1--\r\n").encode()


async def send_as(server, user: str, raw: bytes, to: str) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=server.ports["submission"],
                               start_tls=True, tls_context=client_tls()) as smtp:
        await smtp.login(user, PASSWORD)
        await smtp.sendmail(user, [to], raw)


async def test_clerk_signs_for_a_document_with_a_read_receipt(server, docs, tmp_path):
    sent = await docs.send(from_unit="finance", to=["stats"], title="关于报送报表的通知",
                           number="楚财函〔2026〕5号", attachments=[])
    [copy] = await wait_inbox(server, "wang.wu@cx.example", 1)

    async def delivered():
        s = await docs.status(str(sent.id))
        return s if s["recipients"][0]["state"] == "delivered" else None
    assert await wait_for(delivered)
    got = email.message_from_bytes(copy, policy=email.policy.default)
    # the document asks for a read receipt at the sending unit's document inbox
    assert got["Disposition-Notification-To"] == "finance.docs@cx.example"
    original_id = str(got["Message-ID"])

    # a staff member who is not a clerk: refused with a clear bounce, nothing changes
    await send_as(server, "li.si@cx.example",
                  thunderbird_mdn("li.si@cx.example", "finance.docs@cx.example", original_id,
                                  "x"), "finance.docs@cx.example")
    [bounce] = await wait_inbox(server, "li.si@cx.example", 1)
    assert b"only an authenticated clerk of a receiving unit" in \
        bounce.replace(b"\r\n ", b" ").replace(b"\r\n\t", b" ")
    st = await docs.status(str(sent.id))
    assert st["recipients"][0]["state"] == "delivered"

    # the clerk's read receipt: the server seals a receipt with the stats seal for them
    await send_as(server, "wang.wu@cx.example",
                  thunderbird_mdn("wang.wu@cx.example", "finance.docs@cx.example",
                                  original_id, "x"), "finance.docs@cx.example")

    async def signed():
        s = await docs.status(str(sent.id))
        return s if s["recipients"][0]["state"] == "signed" else None
    st = await wait_for(signed)
    assert st, await docs.status(str(sent.id))
    assert st["recipients"][0]["signed_by"] == "wang.wu@cx.example"
    [receipt] = await wait_inbox(server, "zhang.san@cx.example", 1)
    assert without_trace(receipt).startswith(b"X-CX-Seal-Verdict: trusted;")
    assert b"X-CX-Doc-Receipt: signed" in receipt
    # the same read receipt again changes nothing
    await send_as(server, "wang.wu@cx.example",
                  thunderbird_mdn("wang.wu@cx.example", "finance.docs@cx.example",
                                  original_id, "x"), "finance.docs@cx.example")
    await asyncio.sleep(0.5)
    assert len(await inbox(server, "zhang.san@cx.example")) == 1
    assert (await docs.status(str(sent.id)))["recipients"][0]["signed_at"] == \
        st["recipients"][0]["signed_at"]
    if OPENSSL is not None:  # the receipt copy verifies with OpenSSL too
        ca = await docs.certs.ca_certificate()
        from cryptography.hazmat.primitives.serialization import Encoding
        (tmp_path / "ca.pem").write_bytes(ca.public_bytes(Encoding.PEM))
        (tmp_path / "r.eml").write_bytes(receipt)
        res = await asyncio.to_thread(
            subprocess.run, [OPENSSL, "cms", "-verify", "-CAfile", str(tmp_path / "ca.pem"),
                             "-in", str(tmp_path / "r.eml"), "-out", "/dev/null"],
            capture_output=True, timeout=60, check=False)
        assert res.returncode == 0, res.stderr.decode()
