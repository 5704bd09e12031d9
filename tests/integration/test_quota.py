"""Quota at delivery (issue 13 item 6): usage plus the message size is checked in the
delivery transaction. A burst cannot overshoot; a message only for full mailboxes gets
452 4.2.2 at DATA; with other recipients too it is delivered to them and the full
mailbox's recipient is bounced (DSN, 5.2.2)."""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest

from tests.integration.mailutil import PASSWORD, inbox, wait_inbox


@pytest.fixture
def cfg_overrides() -> dict[str, dict[str, object]]:
    # one test sends as a local user on port 25 (so the bounce comes back to a mailbox)
    return {"smtp": {"trusted_networks": ["127.0.0.0/8"]}}


async def _city(server) -> None:
    d = server.services.directory
    await d.add_unit("finance", "市财政局")
    await d.add_user("small.box", "finance", "小", password=PASSWORD, quota=6000)
    await d.add_user("li.si", "finance", "李四", password=PASSWORD)
    await server.services.components["mail"].parts.book.reload()


def _msg(n: int, to: str) -> bytes:
    return (f"From: a@remote.example\r\nTo: {to}\r\nSubject: burst {n}\r\n\r\n".encode()
            + (b"x" * 70 + b"\r\n") * 20)


async def _send(port: int, n: int, rcpts: list[str]) -> str:
    try:
        await aiosmtplib.send(_msg(n, rcpts[0]), sender="a@remote.example", recipients=rcpts,
                              hostname="127.0.0.1", port=port, start_tls=False)
        return "250"
    except aiosmtplib.SMTPResponseException as exc:
        return f"{exc.code} {exc.message}"


async def test_a_burst_never_takes_a_mailbox_over_quota(server):
    await _city(server)
    port = server.ports["smtp"]
    replies = await asyncio.gather(*(_send(port, n, ["small.box@cx.example"]) for n in range(12)))
    pool = server.services.db.pool
    used, quota = await pool.fetchrow(
        "select u.bytes, a.quota_bytes from mail_usage u join accounts a on a.id = u.account_id"
        " where a.address = 'small.box@cx.example'")
    delivered = await inbox(server, "small.box@cx.example")
    assert used <= quota
    assert used == sum(len(m) for m in delivered)
    assert replies.count("250") == len(delivered) >= 1, replies
    refused = [r for r in replies if r != "250"]
    assert refused and all(r.startswith("452 4.2.2") for r in refused)
    assert await pool.fetchval("select count(*) from queue") == 0  # refused: nothing queued


async def test_full_mailbox_among_others_is_bounced_and_the_rest_delivered(server):
    await _city(server)
    pool = server.services.db.pool
    await pool.execute("update mail_usage set bytes = 5990 from accounts a"
                       " where a.id = mail_usage.account_id and a.address = 'small.box@cx.example'")
    # from li.si, so the bounce comes back to a mailbox we can read
    msg = _msg(1, "small.box@cx.example").replace(b"a@remote.example", b"li.si@cx.example")
    await aiosmtplib.send(msg, sender="li.si@cx.example",
                          recipients=["small.box@cx.example", "li.si@cx.example"],
                          hostname="127.0.0.1", port=server.ports["smtp"], start_tls=False)
    got = await wait_inbox(server, "li.si@cx.example", 2)
    assert len(got) == 2  # its own copy and the DSN
    dsn = next(m for m in got if b"multipart/report" in m)
    assert b"5.2.2" in dsn and b"small.box@cx.example" in dsn
    assert await inbox(server, "small.box@cx.example") == []


async def test_declared_size_that_does_not_fit_is_refused_at_rcpt(server):
    from tests.integration.mailutil import RawSMTP
    await _city(server)
    await server.services.db.pool.execute(
        "update mail_usage set bytes = 2000 from accounts a"
        " where a.id = mail_usage.account_id and a.address = 'small.box@cx.example'")
    await server.services.components["mail"].parts.book.reload()
    c = await RawSMTP.connect(server.ports["smtp"])
    await c.cmd("EHLO me.example")
    assert (await c.cmd("MAIL FROM:<a@remote.example> SIZE=5000")).startswith("250")
    assert (await c.cmd("RCPT TO:<small.box@cx.example>")).startswith("452 4.2.2")
    assert (await c.cmd("RCPT TO:<li.si@cx.example>")).startswith("250")  # no quota issue
    assert (await c.cmd("RSET")).startswith("250")
    assert (await c.cmd("MAIL FROM:<a@remote.example> SIZE=3000")).startswith("250")
    assert (await c.cmd("RCPT TO:<small.box@cx.example>")).startswith("250")
    await c.close()
