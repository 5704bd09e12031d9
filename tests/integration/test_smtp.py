"""SMTP receive and submission on real listeners with a real PostgreSQL (aiosmtplib + raw)."""

from __future__ import annotations

import asyncio
import base64

import aiosmtplib
import pytest

from tests.integration.mailutil import PASSWORD, RawSMTP, client_tls, seed_city, wait_inbox

MSG = (b"From: outside@example.org\r\nTo: zhang.san@cx.example\r\nSubject: hello\r\n"
       b"Message-ID: <1@example.org>\r\n\r\nhello world\r\n")


@pytest.fixture
def cfg_overrides():
    return {"smtp": {"max_message_size": 200_000, "max_recipients": 5}}


@pytest.fixture
async def city(server):
    await seed_city(server)
    return server


async def test_local_delivery_and_stored_structure(city):
    port = city.ports["smtp"]
    await aiosmtplib.send(MSG, sender="outside@example.org", recipients=["zhang.san@cx.example"],
                          hostname="127.0.0.1", port=port, start_tls=False)
    msgs = await wait_inbox(city, "zhang.san@cx.example", 1)
    assert len(msgs) == 1
    assert msgs[0].startswith(b"Received: from ")
    assert msgs[0].endswith(b"hello world\r\n")
    async with city.services.db.pool.acquire() as conn:
        row = await conn.fetchrow(
            "select mm.uid, mm.size, m.structure from mailbox_messages mm"
            " join messages m on m.id = mm.message_id")
    assert row["uid"] == 1 and row["size"] == len(msgs[0])
    assert row["structure"]["body"]  # MIME structure parsed once at delivery


async def test_aliases_unit_lists_and_dedup(city):
    # a unit list takes mail from authenticated local senders only (test_mail_policy.py)
    body = MSG.replace(b"outside@example.org", b"li.si@cx.example")
    await aiosmtplib.send(body, sender="li.si@cx.example",
                          recipients=["finance@cx.example", "director@cx.example",
                                      "zhang.san@cx.example"],
                          hostname="127.0.0.1", port=city.ports["submissions"], use_tls=True,
                          tls_context=client_tls(), username="li.si", password=PASSWORD)
    z = await wait_inbox(city, "zhang.san@cx.example", 1)
    li = await wait_inbox(city, "li.si@cx.example", 1)
    assert len(li) == 1
    assert len(z) == 1  # one copy although three recipients expanded to zhang.san
    async with city.services.db.pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from messages") == 1  # body stored once


async def test_unknown_user_and_open_relay_attempts(city):
    c = await RawSMTP.connect(city.ports["smtp"])
    assert (await c.cmd("EHLO probe.example")).startswith("250")
    assert (await c.cmd("MAIL FROM:<spammer@example.org>")).startswith("250 2.1.0")
    assert (await c.cmd("RCPT TO:<nobody@cx.example>")).startswith("550 5.1.1")
    for rcpt in ("victim@example.net", "victim%example.net@cx.example",
                 "@cx.example:victim@example.net", '"victim@example.net"@cx.example',
                 "victim!example.net@cx.example", "victim@[192.0.2.1]"):
        reply = await c.cmd(f"RCPT TO:<{rcpt}>")
        assert reply[:3] in ("554", "553", "550", "501"), (rcpt, reply)
        assert not reply.startswith("2"), rcpt
    assert (await c.cmd("RCPT TO:<victim@example.net>")) == "554 5.7.1 Relay access denied"
    assert (await c.cmd("DATA")).startswith("503")  # no valid recipient
    assert (await c.cmd("QUIT")).startswith("221 2.0.0")
    await c.close()


async def test_ehlo_advertises_only_what_works(city):
    c = await RawSMTP.connect(city.ports["smtp"])
    ehlo = (await c.cmd("EHLO me.example")).splitlines()
    words = {line[4:].split()[0] for line in ehlo[1:]}
    assert words == {"PIPELINING", "ENHANCEDSTATUSCODES", "SIZE", "8BITMIME", "SMTPUTF8", "STARTTLS",
                     "DSN", "CHUNKING", "BINARYMIME"}
    assert "AUTH" not in words  # port-25 role takes no passwords
    assert (await c.cmd("NOOP")).startswith("250 2.0.0")
    assert (await c.cmd("FOO")).startswith("500 5.5.")
    await c.close()


async def test_submission_requires_tls_then_auth(city):
    c = await RawSMTP.connect(city.ports["submission"])
    ehlo = await c.cmd("EHLO me.example")
    assert "STARTTLS" in ehlo and "AUTH" not in ehlo  # no AUTH before TLS
    assert (await c.cmd("MAIL FROM:<zhang.san@cx.example>")).startswith("530")
    plain = base64.b64encode(b"\0zhang.san@cx.example\0" + PASSWORD.encode()).decode()
    assert not (await c.cmd(f"AUTH PLAIN {plain}")).startswith("235")
    await c.starttls()
    ehlo = await c.cmd("EHLO me.example")
    assert "250-AUTH LOGIN PLAIN" in ehlo or "AUTH LOGIN PLAIN" in ehlo
    assert (await c.cmd("MAIL FROM:<zhang.san@cx.example>")).startswith("530 5.7.0")
    bad = base64.b64encode(b"\0zhang.san@cx.example\0wrong-password").decode()
    assert (await c.cmd(f"AUTH PLAIN {bad}")).startswith("535 5.7.8")
    assert (await c.cmd(f"AUTH PLAIN {plain}")).startswith("235 2.7.0")
    assert (await c.cmd("MAIL FROM:<li.si@cx.example>")).startswith("553 5.7.1")  # forged
    assert (await c.cmd("MAIL FROM:<director@cx.example>")).startswith("250")  # own alias
    assert (await c.cmd("RCPT TO:<someone@example.net>")).startswith("250")  # relay when authed
    await c.close()


async def test_submission_sends_with_aiosmtplib_on_both_listeners(city):
    body = (b"From: =?utf-8?b?5byg5LiJ?= <zhang.san@cx.example>\r\nTo: li.si@cx.example\r\n"
            b"Bcc: wang.wu@cx.example\r\nSubject: report\r\n\r\nplease see\r\n")
    await aiosmtplib.send(body, sender="zhang.san@cx.example",
                          recipients=["li.si@cx.example", "wang.wu@cx.example"],
                          hostname="127.0.0.1", port=city.ports["submission"], start_tls=True,
                          tls_context=client_tls(), username="zhang.san", password=PASSWORD)
    await aiosmtplib.send(body, sender="zhang.san@cx.example", recipients=["li.si@cx.example"],
                          hostname="127.0.0.1", port=city.ports["submissions"], use_tls=True,
                          tls_context=client_tls(), username="zhang.san@cx.example",
                          password=PASSWORD)
    li = await wait_inbox(city, "li.si@cx.example", 2)
    ww = await wait_inbox(city, "wang.wu@cx.example", 1)
    assert len(li) == 2 and len(ww) == 1
    for m in li + ww:
        assert b"\r\nBcc:" not in m and not m.startswith(b"Bcc:")  # RFC 5322 §3.6.3
        assert b"Message-ID: <" in m and b"\r\nDate: " in m  # added at submission
        assert b"with ESMTPSA" in m


async def test_forged_from_header_refused(city):
    body = b"From: li.si@cx.example\r\nTo: li.si@cx.example\r\nSubject: x\r\n\r\nx\r\n"
    with pytest.raises(aiosmtplib.SMTPDataError) as exc:
        await aiosmtplib.send(body, sender="zhang.san@cx.example", recipients=["li.si@cx.example"],
                              hostname="127.0.0.1", port=city.ports["submissions"], use_tls=True,
                              tls_context=client_tls(), username="zhang.san", password=PASSWORD)
    assert exc.value.code == 553 and "5.7.1" in exc.value.message


async def test_oversize_and_too_many_recipients(city):
    c = await RawSMTP.connect(city.ports["smtp"])
    await c.cmd("EHLO me.example")
    assert (await c.cmd("MAIL FROM:<a@example.org> SIZE=999999999")).startswith("552")
    assert (await c.cmd("MAIL FROM:<a@example.org>")).startswith("250")
    for _ in range(5):
        assert (await c.cmd("RCPT TO:<zhang.san@cx.example>")).startswith("250")
    assert (await c.cmd("RCPT TO:<li.si@cx.example>")) == "452 4.5.3 Too many recipients"
    assert (await c.cmd("DATA")).startswith("354")
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 300 + b".\r\n"
    assert (await c.cmd(big)).startswith("552 5.3.4")
    await c.close()
    assert await wait_inbox(city, "zhang.san@cx.example", 1, timeout=0.5) == []


@pytest.mark.parametrize("payload", [
    b"Subject: x\r\n\r\nline\n.\r\nMAIL FROM:<x@y>\r\n",   # bare LF before the dot
    b"Subject: x\r\n\r\nline\r\n.\nRCPT TO:<v@w>\r\n",      # LF after the dot
    b"Subject: x\r\n\r\nline\r.\r\nmore\r\n",               # bare CR
    b"Subject: x\r\n\r\nnul\x00byte\r\n",                    # NUL
])
async def test_smuggling_refused_on_smtp_normalised_on_submission(city, payload):
    c = await RawSMTP.connect(city.ports["smtp"])
    await c.cmd("EHLO me.example")
    await c.cmd("MAIL FROM:<a@example.org>")
    await c.cmd("RCPT TO:<zhang.san@cx.example>")
    assert (await c.cmd("DATA")).startswith("354")
    assert (await c.cmd(payload + b".\r\n")).startswith("550 5.6.0")
    assert (await c.cmd("NOOP")).startswith("250")  # the session lives on
    await c.close()
    c = await RawSMTP.connect(city.ports["submissions"], tls=True)
    await c.cmd("EHLO me.example")
    plain = base64.b64encode(b"\0zhang.san\0" + PASSWORD.encode()).decode()
    assert (await c.cmd(f"AUTH PLAIN {plain}")).startswith("235")
    await c.cmd("MAIL FROM:<zhang.san@cx.example>")
    await c.cmd("RCPT TO:<li.si@cx.example>")
    await c.cmd("DATA")
    body = b"From: zhang.san@cx.example\r\n" + payload
    assert (await c.cmd(body + b".\r\n")).startswith("250 2.0.0")
    await c.close()
    (stored,) = await wait_inbox(city, "li.si@cx.example", 1)
    assert b"\x00" not in stored
    assert stored.count(b"\n") == stored.count(b"\r\n") and stored.count(b"\r") == stored.count(b"\r\n")


async def test_over_quota_mailbox_refused_at_rcpt(city):
    await city.services.directory.update_user("li.si", quota=100)
    # quota is enforced at delivery (issue 13): fill the mailbox's usage directly
    await city.services.db.pool.execute(
        "update mail_usage set bytes = 100 from accounts a"
        " where a.id = mail_usage.account_id and a.address = 'li.si@cx.example'")
    await city.services.components["mail"].parts.book.reload()
    c = await RawSMTP.connect(city.ports["smtp"])
    await c.cmd("EHLO me.example")
    await c.cmd("MAIL FROM:<a@example.org>")
    assert (await c.cmd("RCPT TO:<li.si@cx.example>")) == "552 5.2.2 Mailbox full"
    assert (await c.cmd("RCPT TO:<zhang.san@cx.example>")).startswith("250")
    await c.close()


async def test_every_account_has_special_use_folders(city):
    async with city.services.db.pool.acquire() as conn:
        rows = await conn.fetch(
            "select b.name, b.special_use from mailboxes b join accounts a on a.id = b.account_id"
            " where a.address = 'zhang.san@cx.example' order by b.name")
    assert {(r["name"], r["special_use"]) for r in rows} == {
        ("Archive", "\\Archive"), ("Drafts", "\\Drafts"), ("INBOX", None), ("Junk", "\\Junk"),
        ("Sent", "\\Sent"), ("Trash", "\\Trash")}


@pytest.mark.parametrize("cfg_overrides", [{"smtp": {"max_connections_per_ip": 2}}])
async def test_connection_limit_per_address(server):
    a = await RawSMTP.connect(server.ports["smtp"])
    b = await RawSMTP.connect(server.ports["smtp"])
    r, w = await asyncio.open_connection("127.0.0.1", server.ports["smtp"])
    assert (await r.readline()).startswith(b"421 4.7.0")
    assert await r.read() == b""  # closed
    w.close()
    await a.cmd("QUIT")
    await a.close()
    await asyncio.sleep(0.05)
    c = await RawSMTP.connect(server.ports["smtp"])  # a slot is free again
    assert (await c.cmd("NOOP")).startswith("250")
    await b.close()
    await c.close()


async def test_internal_error_is_temporary_and_session_survives(city, monkeypatch):
    from mailrelay.submit import Submitter

    async def broken(self, sub):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(Submitter, "submit", broken)
    c = await RawSMTP.connect(city.ports["smtp"])
    await c.cmd("EHLO me.example")
    await c.cmd("MAIL FROM:<a@example.org>")
    await c.cmd("RCPT TO:<zhang.san@cx.example>")
    await c.cmd("DATA")
    reply = await c.cmd(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    assert reply == "451 4.3.0 Internal error; try again later"
    assert "secret" not in reply
    assert (await c.cmd("NOOP")).startswith("250")
    await c.close()
