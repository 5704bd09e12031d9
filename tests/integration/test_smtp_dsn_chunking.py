"""Issue 16 items 1, 4, 6 on the real server: the null sender, postmaster/abuse, DSN
(NOTIFY/RET/ENVID/ORCPT, success notices local and relayed, passed onward to a DSN next
hop), BDAT/BINARYMIME, and the command line bound before AUTH."""

from __future__ import annotations

import asyncio
import base64
import email
import logging
import shutil
import subprocess

import aiosmtplib
import pytest

from tests.integration.mailutil import (
    PASSWORD,
    RawSMTP,
    client_tls,
    inbox,
    queue_empty,
    seed_city,
    wait_inbox,
)


class DsnSink:
    """A minimal upstream SMTP server that records the MAIL and RCPT lines it gets and
    advertises DSN only when told to (to test relaying onward and the "relayed" notice)."""

    def __init__(self, dsn: bool) -> None:
        self.dsn = dsn
        self.lines: list[str] = []
        self.bodies: list[bytes] = []
        self.port = 0

    async def serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"220 sink.example ESMTP\r\n")
        while line := (await r.readline()).decode().rstrip("\r\n"):
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO":
                ext = "250-DSN\r\n" if self.dsn else ""
                w.write(f"250-sink.example\r\n{ext}250-8BITMIME\r\n250 SIZE 1000000\r\n".encode())
            elif verb in ("MAIL", "RCPT"):
                self.lines.append(line)
                w.write(b"250 2.0.0 ok\r\n")
            elif verb == "DATA":
                w.write(b"354 go\r\n")
                await w.drain()
                body = b""
                while (chunk := await r.readline()) != b".\r\n":
                    body += chunk
                self.bodies.append(body)
                w.write(b"250 2.0.0 queued\r\n")
            elif verb == "QUIT":
                w.write(b"221 bye\r\n")
                await w.drain()
                break
            else:
                w.write(b"250 2.0.0 ok\r\n")
            await w.drain()
        w.close()


@pytest.fixture(params=[False, True], ids=["plain-next-hop", "dsn-next-hop"])
async def sink(request):
    s = DsnSink(request.param)
    srv = await asyncio.start_server(s.serve, "127.0.0.1", 0)
    s.port = srv.sockets[0].getsockname()[1]
    yield s
    srv.close()


@pytest.fixture
def cfg_overrides(request):
    over: dict[str, dict[str, object]] = {
        "smtp": {"max_message_size": 100_000, "max_unauth_line": 600},
        "inbound_auth": {"enabled": False},
    }
    if "sink" in request.fixturenames:
        s = request.getfixturevalue("sink")
        over["relay"] = {"smarthost": f"127.0.0.1:{s.port}"}
    return over


@pytest.fixture
async def city(server):
    await seed_city(server)
    d = server.services.directory
    await d.add_user("chief", "finance", "局长", roles=["unit-admin"], password=PASSWORD)
    await server.services.components["mail"].parts.book.reload()
    return server


async def test_bounce_with_null_sender_reaches_inbox(city):
    bounce = (b"From: MAILER-DAEMON@example.org\r\nTo: zhang.san@cx.example\r\n"
              b"Subject: Undelivered Mail Returned to Sender\r\n\r\nsorry\r\n")
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=city.ports["smtp"],
                               start_tls=False) as smtp:
        await smtp.sendmail("", ["zhang.san@cx.example"], bounce)  # MAIL FROM:<>
    [msg] = await wait_inbox(city, "zhang.san@cx.example", 1)
    assert msg.endswith(bounce)
    async with city.services.db.pool.acquire() as conn:
        assert await conn.fetchval("select sender from deliveries") == ""


async def test_null_sender_dialogue_and_bad_paths(city):
    c = await RawSMTP.connect(city.ports["smtp"])
    await c.cmd("EHLO remote.example")
    assert (await c.cmd("RCPT TO:<zhang.san@cx.example>")).startswith("503")  # MAIL first
    assert (await c.cmd("MAIL FROM:<>")).startswith("250 2.1.0")
    assert (await c.cmd("MAIL FROM:<>")).startswith("503 5.5.1")  # nested, even when null
    assert (await c.cmd("RCPT TO:<>")).startswith("501")  # no null forward-path
    assert (await c.cmd("RCPT TO:zhang.san@cx.example")).startswith("501")  # brackets
    assert (await c.cmd("RCPT TO:<zhang.san@cx.example> FOO=bar")).startswith("555 5.5.4")
    assert (await c.cmd("RCPT TO:<zhang.san@cx.example>")).startswith("250")
    assert (await c.cmd("RSET")).startswith("250")
    assert (await c.cmd("MAIL FROM: <x@example.org> BODY=9BIT")).startswith("501 5.5.4")
    assert (await c.cmd("MAIL FROM:<x@example.org> ENVID=a+2")).startswith("501 5.5.4")
    assert (await c.cmd("MAIL FROM:<x@example.org> ENVID=a+00b")).startswith("501 5.5.4")
    assert (await c.cmd("MAIL FROM:<x@example.org> RET=HDRS ENVID=Q+2B1")).startswith("250")
    await c.close()


async def test_postmaster_and_abuse(city):
    c = await RawSMTP.connect(city.ports["smtp"])
    await c.cmd("EHLO remote.example")
    assert (await c.cmd("MAIL FROM:<someone@example.org>")).startswith("250")
    # RFC 5321 §4.1.1.3: <Postmaster> without a domain, any case.
    assert (await c.cmd("RCPT TO:<Postmaster>")).startswith("250")
    assert (await c.cmd("RCPT TO:<abuse@cx.example>")).startswith("250")
    assert (await c.cmd("DATA")).startswith("354")
    assert (await c.cmd(b"Subject: spam report\r\n\r\nhi\r\n.\r\n")).startswith("250")
    await c.close()
    # Both route to the first unit-admin of the top unit; one copy (de-duplicated).
    msgs = await wait_inbox(city, "chief@cx.example", 1)
    assert len(msgs) == 1 and msgs[0].endswith(b"hi\r\n")


async def test_success_notice_for_local_sender(city):
    body = (b"From: zhang.san@cx.example\r\nTo: li.si@cx.example\r\nSubject: please confirm\r\n"
            b"Message-ID: <dsn-1@cx.example>\r\n\r\nhello\r\n")
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=city.ports["submissions"],
                               use_tls=True, tls_context=client_tls()) as smtp:
        await smtp.login("zhang.san", PASSWORD)
        await smtp.mail("zhang.san@cx.example", options=["RET=HDRS", "ENVID=env+2B42"])
        await smtp.rcpt("li.si@cx.example",
                        options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Li.Si@cx.example"])
        await smtp.data(body)
    await wait_inbox(city, "li.si@cx.example", 1)
    [notice] = await wait_inbox(city, "zhang.san@cx.example", 1)
    msg = email.message_from_bytes(notice)
    assert msg.get_content_type() == "multipart/report"
    status = notice.decode()
    assert "Action: delivered" in status
    assert "Original-Envelope-Id: env+42" in status
    assert "Original-Recipient: rfc822; Li.Si@cx.example" in status  # ORCPT case kept
    assert "Final-Recipient: rfc822; li.si@cx.example" in status
    assert "Message-ID: <dsn-1@cx.example>" in status  # RET=HDRS: the headers come back


async def test_no_success_notice_unless_asked(city):
    body = b"From: zhang.san@cx.example\r\nTo: li.si@cx.example\r\nSubject: x\r\n\r\nx\r\n"
    await aiosmtplib.send(body, sender="zhang.san@cx.example", recipients=["li.si@cx.example"],
                          hostname="127.0.0.1", port=city.ports["submissions"], use_tls=True,
                          tls_context=client_tls(), username="zhang.san", password=PASSWORD)
    await wait_inbox(city, "li.si@cx.example", 1)
    assert await queue_empty(city)
    assert await inbox(city, "zhang.san@cx.example") == []


async def test_success_notice_for_remote_recipient(city, sink):
    body = (b"From: zhang.san@cx.example\r\nTo: far@remote.example\r\nSubject: out\r\n\r\nbye\r\n")
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=city.ports["submissions"],
                               use_tls=True, tls_context=client_tls()) as smtp:
        await smtp.login("zhang.san", PASSWORD)
        await smtp.mail("zhang.san@cx.example", options=["ENVID=e1", "RET=FULL"])
        await smtp.rcpt("far@remote.example",
                        options=["NOTIFY=SUCCESS", "ORCPT=rfc822;Far@remote.example"])
        await smtp.data(body)
    assert await queue_empty(city)
    mail, rcpt = sink.lines[0], sink.lines[1]
    assert mail.startswith("MAIL FROM:<zhang.san@cx.example>")
    if sink.dsn:
        # RFC 3461 §5.2.1: passed onward; the next hop reports, we send no notice.
        assert "RET=FULL" in mail and "ENVID=e1" in mail
        assert "NOTIFY=SUCCESS" in rcpt and "ORCPT=rfc822;Far@remote.example" in rcpt
        await asyncio.sleep(0.3)  # give a wrong notice the chance to arrive
        assert await inbox(city, "zhang.san@cx.example") == []
    else:
        assert "NOTIFY" not in rcpt and "ENVID" not in mail
        [notice] = await wait_inbox(city, "zhang.san@cx.example", 1)
        assert b"Action: relayed" in notice and b"Final-Recipient: rfc822; far@remote.example" in notice


@pytest.mark.parametrize("sink", [False], indirect=True)
async def test_success_notice_to_remote_sender_goes_out_with_null_sender(city, sink):
    await aiosmtplib.send(b"Subject: hi\r\n\r\nhi\r\n", sender="me@remote.example",
                          recipients=["li.si@cx.example"], hostname="127.0.0.1",
                          port=city.ports["smtp"], start_tls=False,
                          rcpt_options=["NOTIFY=SUCCESS"])
    await wait_inbox(city, "li.si@cx.example", 1)
    assert await queue_empty(city)
    for _ in range(100):
        if sink.bodies:
            break
        await asyncio.sleep(0.05)
    assert sink.lines[0].startswith("MAIL FROM:<>")
    assert sink.lines[1].startswith("RCPT TO:<me@remote.example>")
    assert b"Action: delivered" in sink.bodies[0]


async def test_bdat_binary_message_stored_exactly(city):
    head = (b"From: x@example.org\r\nTo: zhang.san@cx.example\r\nSubject: binary\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: binary\r\n\r\n")
    payload = bytes(range(256)) * 3 + b"\n.\r\n\r.\n\x00end"  # bare CR/LF, NUL, lone dots
    message = head + payload
    c = await RawSMTP.connect(city.ports["smtp"])
    await c.cmd("EHLO remote.example")
    assert (await c.cmd("MAIL FROM:<x@example.org> BODY=BINARYMIME")).startswith("250")
    assert (await c.cmd("RCPT TO:<zhang.san@cx.example>")).startswith("250")
    assert (await c.cmd("DATA")).startswith("503 5.5.1")  # RFC 3030 §3: BDAT only
    first, rest = message[:100], message[100:]
    assert (await c.cmd(b"BDAT %d\r\n" % len(first) + first)).startswith("250 2.0.0")
    reply = await c.cmd(b"BDAT %d LAST\r\n" % len(rest) + rest)
    assert reply.startswith("250 2.0.0"), reply
    # The session goes on after the transaction.
    assert (await c.cmd("NOOP")).startswith("250")
    await c.close()
    [stored] = await wait_inbox(city, "zhang.san@cx.example", 1)
    assert stored.startswith(b"Received: ")
    assert stored[stored.index(b"From: x@example.org"):] == message


async def test_bdat_limits_and_errors(city):
    c = await RawSMTP.connect(city.ports["smtp"])
    await c.cmd("EHLO remote.example")
    # Refused before MAIL, and the octets are consumed (not taken for commands).
    assert (await c.cmd(b"BDAT 6\r\nNOOP\r\n")).startswith("503 5.5.1")
    assert (await c.cmd("MAIL FROM:<x@example.org>")).startswith("250")
    assert (await c.cmd("RCPT TO:<zhang.san@cx.example>")).startswith("250")
    big = b"x" * 60_000
    assert (await c.cmd(b"BDAT 60000\r\n" + big)).startswith("250")
    assert (await c.cmd(b"BDAT 60000\r\n" + big)).startswith("552 5.3.4")  # over 100 kB
    # RFC 3030 §2: chunks already pipelined after a failure are read and dropped.
    assert (await c.cmd(b"BDAT 5 LAST\r\nabcde")).startswith("503 5.5.1")
    assert (await c.cmd("RSET")).startswith("250")
    assert (await c.cmd("MAIL FROM:<x@example.org>")).startswith("250")
    assert (await c.cmd("RCPT TO:<zhang.san@cx.example>")).startswith("250")
    msg = b"Subject: t\r\n\r\nsmall\r\n"
    assert (await c.cmd(b"BDAT %d LAST\r\n" % len(msg) + msg)).startswith("250")
    assert (await c.cmd("BDAT x")).startswith("501 5.5.4")
    await c.close()
    [stored] = await wait_inbox(city, "zhang.san@cx.example", 1)
    assert stored.endswith(msg)


async def test_bdat_on_submission_after_auth(city):
    msg = b"From: zhang.san@cx.example\r\nTo: li.si@cx.example\r\nSubject: s\r\n\r\nbody\r\n"
    c = await RawSMTP.connect(city.ports["submissions"], tls=True)
    await c.cmd("EHLO client")
    assert (await c.cmd(b"BDAT 4 LAST\r\nabcd")).startswith("530")  # AUTH first
    blob = base64.b64encode(f"\0zhang.san\0{PASSWORD}".encode()).decode()
    assert (await c.cmd(f"AUTH PLAIN {blob}")).startswith("235")
    # A read receipt (RFC 8098 §2.1) goes out with the null sender; From: is still checked.
    assert (await c.cmd("MAIL FROM:<>")).startswith("250")
    assert (await c.cmd("RCPT TO:<li.si@cx.example>")).startswith("250")
    forged = b"From: li.si@cx.example\r\n\r\nx\r\n"
    assert (await c.cmd(b"BDAT %d LAST\r\n" % len(forged) + forged)).startswith("553 5.7.1")
    assert (await c.cmd("MAIL FROM:<zhang.san@cx.example>")).startswith("250")
    assert (await c.cmd("RCPT TO:<li.si@cx.example>")).startswith("250")
    assert (await c.cmd(b"BDAT %d LAST\r\n" % len(msg) + msg)).startswith("250")
    await c.close()
    [stored] = await wait_inbox(city, "li.si@cx.example", 1)
    assert b"Subject: s\r\n" in stored and stored.endswith(b"\r\n\r\nbody\r\n")


async def test_command_line_bound_before_auth(city):
    line = "MAIL FROM:<b@example.org> X-PAD=" + "y" * 580  # 615 octets
    c = await RawSMTP.connect(city.ports["smtp"])
    await c.cmd("EHLO remote.example")
    assert (await c.cmd(line)).startswith("500 5.5.2")  # smtp.max_unauth_line = 600
    assert (await c.cmd("MAIL FROM:<b@example.org>")).startswith("250")  # still serving
    await c.close()
    # After AUTH the RFC limit of MAIL (512 + SIZE, SMTPUTF8, DSN) applies instead.
    c = await RawSMTP.connect(city.ports["submissions"], tls=True)
    await c.cmd("EHLO client")
    blob = base64.b64encode(f"\0zhang.san\0{PASSWORD}".encode()).decode()
    assert (await c.cmd(f"AUTH PLAIN {blob}")).startswith("235")
    assert (await c.cmd(line)).startswith("555 5.5.4")  # parsed: X-PAD is unknown
    await c.close()


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
async def test_swaks_null_sender(city):
    proc = await asyncio.create_subprocess_exec(
        "swaks", "--server", f"127.0.0.1:{city.ports['smtp']}", "--from", "<>",
        "--to", "postmaster", "--body", "a bounce",
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    assert "MAIL FROM:<>" in out.decode()
    [msg] = await wait_inbox(city, "chief@cx.example", 1)
    assert msg.rstrip().endswith(b"a bounce")


async def test_bdat_cut_short_is_dropped_quietly(city, caplog):
    caplog.set_level(logging.INFO)
    c = await RawSMTP.connect(city.ports["smtp"])
    await c.cmd("EHLO remote.example")
    await c.cmd("MAIL FROM:<x@example.org>")
    await c.cmd("RCPT TO:<zhang.san@cx.example>")
    c.w.write(b"BDAT 1000 LAST\r\nSubject: cut\r\n\r\nonly a little")
    await c.w.drain()
    await c.close()
    c = await RawSMTP.connect(city.ports["smtp"])  # the server keeps serving
    assert (await c.cmd("EHLO again.example")).startswith("250")
    await c.close()
    assert await queue_empty(city)
    assert await inbox(city, "zhang.san@cx.example") == []  # nothing half-received kept
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
