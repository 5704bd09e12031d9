"""Mail to the outside world through the whole pipeline: queue -> smarthost (a local
aiosmtpd sink) with 2xx, 4xx-then-2xx (retry with backoff) and 5xx (DSN to the sender)."""

from __future__ import annotations

import asyncio
import email

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP as SinkSMTP

from mailrelay.dkim import generate_key, record_value
from mailrelay.dkim import verify as dkim_verify
from tests.integration.mailutil import PASSWORD, client_tls, queue_empty, seed_city, wait_inbox


class Sink:
    """An upstream smarthost whose RCPT answers follow a script per recipient."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []
        self.script: dict[str, list[str]] = {}
        self.attempts: dict[str, int] = {}
        self.port = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.attempts[address] = self.attempts.get(address, 0) + 1
        replies = self.script.get(address, [])
        reply = replies.pop(0) if replies else "250 2.1.5 ok"
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server, session, envelope):
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 accepted"


@pytest.fixture
async def sink():
    s = Sink()
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: SinkSMTP(s, hostname="upstream.example"), "127.0.0.1", 0)
    s.port = srv.sockets[0].getsockname()[1]
    yield s
    srv.close()


DKIM_KEY = generate_key("cx", "cx.example", 1024)


@pytest.fixture
def cfg_overrides(sink, tmp_path):
    key = tmp_path / "dkim.key"
    key.write_bytes(DKIM_KEY[0])
    return {"relay": {"smarthost": f"127.0.0.1:{sink.port}"},
            "queue": {"retry_initial": 1, "retry_max": 2},
            "dkim": {"key_file": str(key)},
            "smtp": {"trusted_networks": ["127.0.0.0/8"]}}


async def send_out(server, recipients, body=None):
    body = body or (b"From: zhang.san@cx.example\r\nTo: friend@remote.example\r\n"
                    b"Subject: out\r\n\r\n.leading dot line\r\nbye\r\n")
    await aiosmtplib.send(body, sender="zhang.san@cx.example", recipients=recipients,
                          hostname="127.0.0.1", port=server.ports["submissions"], use_tls=True,
                          tls_context=client_tls(), username="zhang.san", password=PASSWORD)
    return body


async def test_relay_ok_byte_exact(server, sink):
    await seed_city(server)
    body = await send_out(server, ["friend@remote.example"])
    assert await queue_empty(server)
    (mail_from, rcpts, data), = sink.received
    assert mail_from == "zhang.san@cx.example" and rcpts == ["friend@remote.example"]
    assert data.endswith(body[body.index(b"\r\n\r\n"):])  # dot-stuffing undone, bytes intact
    assert data.startswith(b"DKIM-Signature:")  # signed once at submission
    assert dkim_verify(data, lambda name: record_value(DKIM_KEY[1]))
    async with server.services.db.pool.acquire() as conn:
        row = await conn.fetchrow("select status, attempts from deliveries")
    assert row["status"] == "delivered" and row["attempts"] == 1


async def test_temporary_failure_is_retried(server, sink):
    await seed_city(server)
    sink.script["slow@remote.example"] = ["451 4.3.0 try later"]
    await send_out(server, ["slow@remote.example"])
    assert await queue_empty(server, timeout=20)
    assert sink.attempts["slow@remote.example"] == 2
    async with server.services.db.pool.acquire() as conn:
        row = await conn.fetchrow("select status, attempts from deliveries")
    assert row["status"] == "delivered" and row["attempts"] == 2


async def test_permanent_failure_bounces_to_sender_inbox(server, sink):
    await seed_city(server)
    sink.script["gone@remote.example"] = ["550 5.1.1 no such user"]
    await send_out(server, ["gone@remote.example", "friend@remote.example"])
    (dsn_raw,) = await wait_inbox(server, "zhang.san@cx.example", 1)
    msg = email.message_from_bytes(dsn_raw)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    status = [p for p in msg.walk() if p.get_content_type() == "message/delivery-status"][0]
    text = status.as_string()
    assert "gone@remote.example" in text and "5.1.1" in text and "Action: failed" in text
    assert "friend@remote.example" not in text  # delivered recipient is not reported
    assert [r for _f, r, _d in sink.received] == [["friend@remote.example"]]
    assert await queue_empty(server)
    async with server.services.db.pool.acquire() as conn:
        # the DSN went out with the null sender: never a bounce for a bounce
        sender = await conn.fetchval("select sender from deliveries where recipient = $1",
                                     "zhang.san@cx.example")
    assert sender == ""


async def test_trusted_network_may_relay_without_auth(server, sink):
    await seed_city(server)
    body = b"From: app@internal.example\r\nSubject: from the intranet\r\n\r\nhi\r\n"
    await aiosmtplib.send(body, sender="app@internal.example", recipients=["far@remote.example"],
                          hostname="127.0.0.1", port=server.ports["smtp"], start_tls=False)
    assert await queue_empty(server)
    assert [r for _f, r, _d in sink.received] == [["far@remote.example"]]
    # not our domain: no DKIM signature is added for a stranger's mail
    assert not sink.received[0][2].startswith(b"DKIM-Signature:")
