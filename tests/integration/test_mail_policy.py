"""Mail policy against a running server (issue 12 item 6): no DKIM on anonymous mail,
own-domain spoofing refused on port 25 (trusted networks excepted), lists closed to
anonymous senders, the harvest limit (error budget), display-name spoofing on submission.

The client is always 127.0.0.1: `trusted` (a fixture, overridden by parametrize) decides
whether that address is in `smtp.trusted_networks`.
"""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP as SinkSMTP

from mailrelay.dkim import generate_key, record_value
from mailrelay.dkim import verify as dkim_verify
from tests.integration.mailutil import (
    PASSWORD,
    RawSMTP,
    client_tls,
    queue_empty,
    seed_city,
    wait_inbox,
)

DKIM_KEY = generate_key("cx", "cx.example", 1024)
HARD, SOFT = 6, 3
TRUST = ["127.0.0.0/8"]


class Sink:
    """The upstream smarthost: keeps what it is given."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []
        self.port = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("gone@"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 ok"

    async def handle_DATA(self, server, session, envelope):
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos),
                              envelope.original_content))
        return "250 2.0.0 accepted"


@pytest.fixture
async def sink():
    s = Sink()
    srv = await asyncio.get_running_loop().create_server(
        lambda: SinkSMTP(s, hostname="upstream.example"), "127.0.0.1", 0)
    s.port = srv.sockets[0].getsockname()[1]
    yield s
    srv.close()


@pytest.fixture
def trusted() -> list[str]:
    return []


@pytest.fixture
def open_lists() -> list[str]:
    return []


@pytest.fixture
def cfg_overrides(sink, tmp_path, trusted, open_lists):
    key = tmp_path / "dkim.key"
    key.write_bytes(DKIM_KEY[0])
    return {"relay": {"smarthost": f"127.0.0.1:{sink.port}"},
            "dkim": {"key_file": str(key)},
            "smtp": {"trusted_networks": trusted, "soft_error_limit": SOFT,
                     "hard_error_limit": HARD, "error_sleep_time": 0.01,
                     "large_alias_members": 3, "open_lists": open_lists}}


@pytest.fixture
async def city(server):
    await seed_city(server)
    d = server.services.directory
    await d.add_alias("forward", "friend@remote.example")  # forwards outside
    await d.add_alias("moved", "gone@remote.example")  # forwards to a dead address
    for target in ("zhang.san", "li.si", "wang.wu"):
        await d.add_alias("everyone", target)  # a large alias (>= large_alias_members)
    await server.services.components["mail"].parts.book.reload()
    return server


def port25(server, body: bytes, sender: str, rcpts: list[str]):
    return aiosmtplib.send(body, sender=sender, recipients=rcpts, hostname="127.0.0.1",
                           port=server.ports["smtp"], start_tls=False)


def submit(server, body: bytes, rcpts: list[str], user: str = "zhang.san"):
    return aiosmtplib.send(body, sender=f"{user}@cx.example", recipients=rcpts,
                           hostname="127.0.0.1", port=server.ports["submissions"], use_tls=True,
                           tls_context=client_tls(), username=user, password=PASSWORD)


def verifies(data: bytes) -> bool:
    return dkim_verify(data, lambda name: record_value(DKIM_KEY[1]))


# ---- DKIM only for what we vouch for ---------------------------------------------------

async def test_anonymous_forwarded_mail_is_not_signed_submission_is(city, sink):
    outside = b"From: someone@example.org\r\nSubject: hi\r\n\r\nforward me\r\n"
    await port25(city, outside, "someone@example.org", ["forward@cx.example"])
    own = b"From: zhang.san@cx.example\r\nSubject: out\r\n\r\nsigned\r\n"
    await submit(city, own, ["friend@remote.example"])
    assert await queue_empty(city)
    by_sender = {f: d for f, _r, d in sink.received}
    assert set(by_sender) == {"someone@example.org", "zhang.san@cx.example"}
    assert b"DKIM-Signature:" not in by_sender["someone@example.org"]
    assert by_sender["zhang.san@cx.example"].startswith(b"DKIM-Signature:")
    assert verifies(by_sender["zhang.san@cx.example"])


@pytest.mark.parametrize("trusted", [TRUST])
async def test_trusted_port25_mail_in_our_name_is_accepted_but_not_signed(city, sink):
    """The exception for trusted networks: accepted (even to a list), yet never signed,
    so a forged local chief forwarded outside never carries d=cx.example."""
    forged = b"From: zhang.san@cx.example\r\nSubject: chief\r\n\r\nforged\r\n"
    await port25(city, forged, "zhang.san@cx.example", ["forward@cx.example", "finance@cx.example"])
    assert await queue_empty(city)
    [(mail_from, rcpts, data)] = sink.received
    assert (mail_from, rcpts) == ("zhang.san@cx.example", ["friend@remote.example"])
    assert b"DKIM-Signature:" not in data
    assert len(await wait_inbox(city, "li.si@cx.example", 1)) == 1  # the unit list


async def test_bounce_is_signed_the_bounced_message_is_not(city, sink):
    """A bounce is ours (From: MAILER-DAEMON@cx.example): signed. The anonymous message
    it reports on went out unsigned and stays so inside the DSN's headers."""
    body = b"From: someone@example.org\r\nSubject: hi\r\n\r\nfor a moved person\r\n"
    await port25(city, body, "someone@example.org", ["moved@cx.example"])
    for _ in range(400):  # the DSN is queued after the failure: wait for it at the sink
        if sink.received:
            break
        await asyncio.sleep(0.05)
    assert await queue_empty(city, timeout=20)
    [(mail_from, rcpts, dsn)] = sink.received  # only the DSN got through
    assert (mail_from, rcpts) == ("<>", ["someone@example.org"])  # aiosmtpd keeps the brackets
    assert dsn.startswith(b"DKIM-Signature:") and verifies(dsn)
    assert b"From: Mail Delivery System <MAILER-DAEMON@cx.example>" in dsn


async def test_cli_mail_send_is_signed(city, sink, cfg, monkeypatch, capsys):
    from gateway.cli.main import main
    monkeypatch.setenv("CXGW_DATABASE_URL", cfg.database.url)
    toml = cfg.state_path.parent / "cli.toml"
    toml.write_text(f'[server]\nstate_dir = "{cfg.state_path}"\n'
                    f'[relay]\nsmarthost = "127.0.0.1:{sink.port}"\n'
                    f'[dkim]\nkey_file = "{cfg.dkim.key_file}"\n')
    code = await asyncio.to_thread(main, ["--config", str(toml), "mail", "send", "--from",
                                          "zhang.san@cx.example", "--to", "friend@remote.example",
                                          "--subject", "from the CLI", "--body", "hello"])
    assert code == 0, capsys.readouterr()
    assert await queue_empty(city)
    [(_f, _r, data)] = sink.received
    assert data.startswith(b"DKIM-Signature:") and verifies(data)


# ---- own-domain spoofing on port 25 ---------------------------------------------------

async def test_own_domain_spoof_refused_on_port25(city):
    c = await RawSMTP.connect(city.ports["smtp"])
    assert (await c.cmd("EHLO spoofer.example")).startswith("250")
    assert (await c.cmd("MAIL FROM:<zhang.san@cx.example>")) .startswith("550 5.7.1")
    assert (await c.cmd("MAIL FROM:<boss@sub.cx.example>")).startswith("550 5.7.1")
    # an outside envelope with our domain in From: is refused after DATA
    assert (await c.cmd("MAIL FROM:<spoofer@example.org>")).startswith("250")
    assert (await c.cmd("RCPT TO:<li.si@cx.example>")).startswith("250")
    assert (await c.cmd("DATA")).startswith("354")
    reply = await c.cmd(b"From: =?utf-8?b?5byg5LiJ?= <Zhang.San@CX.example>\r\nSubject: pay\r\n"
                        b"\r\nwire the money\r\n.\r\n")
    assert reply.startswith("550 5.7.1"), reply
    assert (await c.cmd("QUIT")).startswith("221")
    await c.close()
    # mail from outside in its own name still arrives
    await port25(city, b"From: a@example.org\r\nSubject: ok\r\n\r\nok\r\n", "a@example.org",
                 ["li.si@cx.example"])
    assert len(await wait_inbox(city, "li.si@cx.example", 1)) == 1


@pytest.mark.parametrize("trusted", [TRUST])
async def test_trusted_network_may_use_our_domain(city):
    body = b"From: zhang.san@cx.example\r\nSubject: from an intranet app\r\n\r\nok\r\n"
    await port25(city, body, "zhang.san@cx.example", ["li.si@cx.example"])
    assert len(await wait_inbox(city, "li.si@cx.example", 1)) == 1


# ---- lists -----------------------------------------------------------------------------

async def test_anonymous_mail_to_unit_list_and_large_alias_refused(city):
    c = await RawSMTP.connect(city.ports["smtp"])
    assert (await c.cmd("EHLO outside.example")).startswith("250")
    assert (await c.cmd("MAIL FROM:<a@example.org>")).startswith("250")
    assert (await c.cmd("RCPT TO:<finance@cx.example>")).startswith("550 5.7.1")  # unit list
    assert (await c.cmd("RCPT TO:<everyone@cx.example>")).startswith("550 5.7.1")  # 3 members
    assert (await c.cmd("RCPT TO:<director@cx.example>")).startswith("250")  # small alias
    assert (await c.cmd("RCPT TO:<stats.docs@cx.example>")).startswith("250")  # document inbox
    await c.close()
    # an authenticated local sender reaches the list
    await submit(city, b"From: zhang.san@cx.example\r\nSubject: all\r\n\r\nmeeting\r\n",
                 ["finance@cx.example", "everyone@cx.example"])
    assert len(await wait_inbox(city, "li.si@cx.example", 1)) == 1
    assert len(await wait_inbox(city, "wang.wu@cx.example", 1)) == 1


@pytest.mark.parametrize("open_lists", [["finance"]])
async def test_open_list_takes_anonymous_mail(city):
    await port25(city, b"From: a@example.org\r\nSubject: hi\r\n\r\nhi\r\n", "a@example.org",
                 ["finance@cx.example"])
    assert len(await wait_inbox(city, "li.si@cx.example", 1)) == 1
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await port25(city, b"Subject: hi\r\n\r\nhi\r\n", "a@example.org", ["stats@cx.example"])


# ---- harvest limit ---------------------------------------------------------------------

async def test_harvest_limit_closes_with_421(city):
    """Pipelined RCPTs to unknown users: HARD refusals, then 421 and the connection
    closes; nothing more is answered, however many RCPTs were sent."""
    r, w = await asyncio.open_connection("127.0.0.1", city.ports["smtp"])
    assert (await r.readline()).startswith(b"220")
    lines = [b"EHLO harvester.example", b"MAIL FROM:<h@example.org>"]
    lines += [f"RCPT TO:<guess{i}@cx.example>".encode() for i in range(200)]
    w.write(b"\r\n".join(lines) + b"\r\n")
    await w.drain()
    data = await asyncio.wait_for(r.read(), 30)  # until the server closes
    replies = [ln for ln in data.decode().split("\r\n") if ln and ln[3:4] == " "]
    codes = [ln[:3] for ln in replies]
    assert codes == ["250", "250"] + ["550"] * HARD + ["421"], codes
    assert replies[-1].startswith("421 4.7.0")
    w.close()
    # another client is served as before
    await port25(city, b"From: a@example.org\r\nSubject: ok\r\n\r\nok\r\n", "a@example.org",
                 ["li.si@cx.example"])
    assert len(await wait_inbox(city, "li.si@cx.example", 1)) == 1


async def test_accepted_message_resets_the_error_count(city):
    c = await RawSMTP.connect(city.ports["smtp"])
    assert (await c.cmd("EHLO me.example")).startswith("250")
    for _round in range(2):
        assert (await c.cmd("MAIL FROM:<a@example.org>")).startswith("250")
        for i in range(HARD - 1):
            assert (await c.cmd(f"RCPT TO:<nobody{i}@cx.example>")).startswith("550 5.1.1")
        assert (await c.cmd("RCPT TO:<li.si@cx.example>")).startswith("250")
        assert (await c.cmd("DATA")).startswith("354")
        assert (await c.cmd(b"Subject: x\r\n\r\nx\r\n.\r\n")).startswith("250")
    assert (await c.cmd("QUIT")).startswith("221")
    await c.close()


# ---- display names on submission -------------------------------------------------------

@pytest.mark.parametrize("from_header", [
    b'"director@cx.example" <li.si@cx.example>',
    b'"boss@gov.example via" <li.si@cx.example>',
    "\"wang.wu\uff20cx.example\" <li.si@cx.example>".encode(),  # fullwidth at sign
    b"=?utf-8?b?" + __import__("base64").b64encode(b"zhang.san@cx.example")
    + b"?= <li.si@cx.example>",  # hidden in an encoded word
])
async def test_display_name_spoof_refused(city, from_header):
    body = b"From: " + from_header + b"\r\nSubject: x\r\n\r\nx\r\n"
    with pytest.raises(aiosmtplib.SMTPDataError) as exc:
        await submit(city, body, ["wang.wu@cx.example"], user="li.si")
    assert exc.value.code == 550 and "5.7.1" in exc.value.message


async def test_display_name_with_own_address_or_plain_name_is_fine(city):
    for head in (b'"Li Si (li.si@cx.example)" <li.si@cx.example>',
                 "\u674e\u56db <li.si@cx.example>".encode()):
        await submit(city, b"From: " + head + b"\r\nSubject: x\r\n\r\nx\r\n",
                     ["wang.wu@cx.example"], user="li.si")
    assert len(await wait_inbox(city, "wang.wu@cx.example", 2)) == 2
