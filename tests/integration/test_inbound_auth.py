"""Issue 16 item 5 on the real server: SPF, DKIM, ARC and DMARC of mail from outside on
the port-25 role, with a test DNS zone served by a small authoritative DNS server on
127.0.0.1 (tests/dnszone.py) — the server's own aiodns resolver asks it, never the
internet."""

from __future__ import annotations

import asyncio
import re

import aiosmtplib
import dkim
import pytest

from mailrelay.dkim import generate_key, record_value
from tests.dnszone import ZoneServer
from tests.integration.mailutil import RawSMTP, inbox, seed_city, wait_inbox

KEY, RECORD = generate_key("sel", "example.org", 1024)
FWD_KEY, FWD_RECORD = generate_key("arc", "lists.example.net", 1024)

ZONE = {
    # example.org: SPF passes for 127.0.0.1, DKIM key published, DMARC reject.
    ("example.org", "TXT"): ["v=spf1 ip4:192.0.2.0/24 include:_spf.example.org -all"],
    ("_spf.example.org", "TXT"): ["v=spf1 a:relay.example.org/24 -all"],
    ("relay.example.org", "A"): ["127.0.0.9"],
    ("sel._domainkey.example.org", "TXT"): [record_value(RECORD)],
    ("_dmarc.example.org", "TXT"): ["v=DMARC1; p=reject; rua=mailto:d@example.org"],
    # evil.example: SPF fails for us, DMARC reject.
    ("evil.example", "TXT"): ["v=spf1 ip4:192.0.2.1 -all"],
    ("_dmarc.evil.example", "TXT"): ["v=DMARC1; p=reject"],
    # shady.example: SPF fails, DMARC quarantine (via the organizational domain).
    ("shady.example", "TXT"): ["v=spf1 -all"],
    ("_dmarc.shady.example", "TXT"): ["v=DMARC1; p=quarantine"],
    ("news.shady.example", "TXT"): ["v=spf1 -all"],
    # flaky.example: the DMARC lookup fails temporarily.
    ("flaky.example", "TXT"): ["v=spf1 -all"],
    ("_dmarc.flaky.example", "TXT"): ["SERVFAIL"],
    # a forwarder that ARC-seals and passes SPF for 127.0.0.1
    ("lists.example.net", "TXT"): ["v=spf1 ip4:127.0.0.1 -all"],
    ("arc._domainkey.lists.example.net", "TXT"): [record_value(FWD_RECORD)],
}


@pytest.fixture
async def zone():
    srv = await ZoneServer.start(ZONE)
    yield srv
    srv.close()


@pytest.fixture
def cfg_overrides(zone):
    return {"inbound_auth": {"enabled": True, "dns_servers": [f"127.0.0.1:{zone.port}"],
                             "dns_timeout": 2.0, "check_loopback": True}}


@pytest.fixture
async def city(server):
    await seed_city(server)
    return server


def signed(body: bytes) -> bytes:
    return dkim.sign(body, b"sel", b"example.org", KEY,
                     include_headers=[b"from", b"to", b"subject", b"message-id"]) + body


async def send(city, raw: bytes, sender: str, helo: str = "mx.example.org") -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=city.ports["smtp"], start_tls=False,
                               local_hostname=helo) as smtp:
        await smtp.sendmail(sender, ["zhang.san@cx.example"], raw)


async def test_spf_fail_and_dmarc_reject_refused_at_data(city):
    raw = (b"From: Chief <chief@evil.example>\r\nTo: zhang.san@cx.example\r\n"
           b"Subject: wire money\r\n\r\nnow\r\n")
    c = await RawSMTP.connect(city.ports["smtp"])
    await c.cmd("EHLO mx.evil.example")
    assert (await c.cmd("MAIL FROM:<chief@evil.example>")).startswith("250")
    assert (await c.cmd("RCPT TO:<zhang.san@cx.example>")).startswith("250")
    assert (await c.cmd("DATA")).startswith("354")
    reply = await c.cmd(raw + b".\r\n")
    assert reply.startswith("550 5.7.1"), reply
    assert "DMARC" in reply
    assert (await c.cmd("NOOP")).startswith("250")  # the session goes on
    await c.close()
    assert await inbox(city, "zhang.san@cx.example") == []


async def test_passing_message_carries_our_authentication_results(city):
    body = (b"Authentication-Results: mail.cx.example; dkim=pass header.d=evil.example\r\n"
            b"Authentication-Results: other.example; spf=fail\r\n"
            b"From: News <news@example.org>\r\nTo: zhang.san@cx.example\r\n"
            b"Subject: newsletter\r\nMessage-ID: <n1@example.org>\r\n\r\nhello\r\n")
    raw = signed(body)
    sig = re.sub(rb"\s+", b"", raw.split(b"\r\n\r\n")[0].split(b"DKIM-Signature:")[1])
    b_tag = re.search(rb";b=([A-Za-z0-9+/]{8})", sig).group(1).decode()
    await send(city, raw, "news@example.org")
    [stored] = await wait_inbox(city, "zhang.san@cx.example", 1)
    head = stored.split(b"\r\n\r\n", 1)[0].decode()
    ours = ("Authentication-Results: mail.cx.example;\r\n"
            "\tspf=pass smtp.mailfrom=news@example.org;\r\n"
            f"\tdkim=pass header.d=example.org header.s=sel header.b={b_tag};\r\n"
            "\tdmarc=pass (p=reject dis=none) header.from=example.org\r\n")
    assert ours in head + "\r\n"
    # RFC 8601 §5: the forged field with our authserv-id is gone, the foreign one stays.
    assert head.count("Authentication-Results:") == 2
    assert "header.d=evil.example" not in head
    assert "Authentication-Results: other.example; spf=fail" in head


async def test_dkim_alone_aligns_when_spf_fails(city):
    # Sent from an address outside example.org's SPF, but DKIM-signed: DMARC passes.
    raw = signed(b"From: news@example.org\r\nTo: zhang.san@cx.example\r\nSubject: s\r\n\r\nx\r\n")
    await send(city, raw, "bounce@evil.example", helo="mx.evil.example")
    [stored] = await wait_inbox(city, "zhang.san@cx.example", 1)
    assert b"spf=fail smtp.mailfrom=bounce@evil.example" in stored
    assert b"dmarc=pass" in stored


async def test_tampered_signature_fails_and_is_rejected(city):
    raw = signed(b"From: news@example.org\r\nTo: zhang.san@cx.example\r\nSubject: s\r\n\r\nx\r\n")
    raw = raw.replace(b"\r\n\r\nx\r\n", b"\r\n\r\ny\r\n")
    with pytest.raises(aiosmtplib.SMTPDataError) as exc:
        await send(city, raw, "bounce@evil.example", helo="mx.evil.example")
    assert exc.value.code == 550 and "5.7.1" in exc.value.message


async def test_quarantine_lands_in_junk(city):
    async with city.services.db.pool.acquire() as conn:  # the user deleted Junk: made again
        await conn.execute("delete from mailboxes where name = 'Junk'")
    raw = (b"From: promo@news.shady.example\r\nTo: zhang.san@cx.example\r\n"
           b"Subject: deal\r\n\r\nbuy\r\n")
    await send(city, raw, "promo@news.shady.example", helo="mx.shady.example")
    for _ in range(100):
        junk = await inbox(city, "zhang.san@cx.example", "Junk")
        if junk:
            break
        await asyncio.sleep(0.05)
    assert len(junk) == 1 and junk[0].endswith(b"buy\r\n")
    assert b"dmarc=fail (p=quarantine dis=quarantine) header.from=news.shady.example" in junk[0]
    assert await inbox(city, "zhang.san@cx.example") == []
    async with city.services.db.pool.acquire() as conn:
        use = await conn.fetchval(
            "select special_use from mailboxes b join accounts a on a.id = b.account_id"
            " where a.address = 'zhang.san@cx.example' and b.name = 'Junk'")
    assert use == "\\Junk"  # RFC 6154


async def test_temporary_dns_failure_defers(city):
    raw = b"From: a@flaky.example\r\nTo: zhang.san@cx.example\r\nSubject: s\r\n\r\nx\r\n"
    with pytest.raises(aiosmtplib.SMTPDataError) as exc:
        await send(city, raw, "a@flaky.example", helo="mx.flaky.example")
    assert exc.value.code == 451  # fail closed: the client keeps it and retries


async def test_arc_sealed_forward_is_verified(city):
    # The list received a DKIM-signed message, stamped its own results and sealed it.
    original = signed(b"From: news@example.org\r\nTo: list@lists.example.net\r\n"
                      b"Subject: forwarded\r\nMessage-ID: <f1@example.org>\r\n\r\nhi\r\n")
    with_ar = (b"Authentication-Results: lists.example.net; dkim=pass header.d=example.org\r\n"
               + original)
    seal = dkim.arc_sign(with_ar, b"arc", b"lists.example.net", FWD_KEY,
                         b"lists.example.net", include_headers=[b"from", b"to", b"subject"])
    raw = b"".join(seal) + with_ar
    await send(city, raw, "list-bounces@lists.example.net", helo="mx.lists.example.net")
    [stored] = await wait_inbox(city, "zhang.san@cx.example", 1)
    ar = stored.split(b"Authentication-Results: mail.cx.example;")[1].split(b"\r\n\r\n")[0]
    assert b"arc=pass" in ar
    assert b"spf=pass smtp.mailfrom=list-bounces@lists.example.net" in ar


async def test_null_sender_uses_the_helo_identity(city):
    raw = b"From: MAILER-DAEMON@example.org\r\nTo: zhang.san@cx.example\r\nSubject: b\r\n\r\nx\r\n"
    c = await RawSMTP.connect(city.ports["smtp"])
    await c.cmd("EHLO relay.example.org")
    assert (await c.cmd("MAIL FROM:<>")).startswith("250")
    assert (await c.cmd("RCPT TO:<zhang.san@cx.example>")).startswith("250")
    assert (await c.cmd("DATA")).startswith("354")
    reply = await c.cmd(raw + b".\r\n")
    await c.close()
    # RFC 7208 §2.4: postmaster@<HELO>; relay.example.org has no SPF record of its own,
    # so SPF is none and DMARC for example.org (p=reject) fails: refused.
    assert reply.startswith("550 5.7.1"), reply


@pytest.mark.parametrize("cfg_overrides", [{"inbound_auth": {"enabled": True}}])
async def test_loopback_clients_are_not_checked_by_default(city, cfg_overrides):
    # Local software (content filters, re-injection, the load harness) on 127.0.0.1: no
    # DNS is asked (this config has no test zone, and the test must not reach the
    # internet), no verdict, no header.
    raw = b"From: chief@evil.example\r\nTo: zhang.san@cx.example\r\nSubject: s\r\n\r\nx\r\n"
    await send(city, raw, "chief@evil.example")
    [stored] = await wait_inbox(city, "zhang.san@cx.example", 1)
    assert b"Authentication-Results" not in stored
