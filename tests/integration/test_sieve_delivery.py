"""Sieve at local delivery against the running server: mail in over SMTP (aiosmtplib), a
script uploaded with the `managesieve` client, folders read over IMAP (imaplib), and what
goes out (vacation replies, rejection notices, redirects) caught by a smarthost sink."""

from __future__ import annotations

import asyncio
import email
import email.policy
import imaplib
from typing import Any

import aiosmtplib
import managesieve
import pytest
from aiosmtpd.smtp import SMTP as SinkSMTP

from mailrelay.sieve import repo as sieve_repo
from tests.integration.mailutil import PASSWORD, RawSMTP, client_tls, inbox, queue_empty, seed_city

pytestmark = pytest.mark.integration


class Sink:
    """The upstream smarthost: keeps every message it is given."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []
        self.port = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos),
                              envelope.original_content))
        return "250 2.0.0 accepted"


@pytest.fixture
async def sink() -> Any:
    s = Sink()
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: SinkSMTP(s, hostname="upstream.example"),
                                   "127.0.0.1", 0)
    s.port = srv.sockets[0].getsockname()[1]
    yield s
    srv.close()


@pytest.fixture
def cfg_overrides(sink: Sink) -> dict[str, dict[str, object]]:
    return {"relay": {"smarthost": f"127.0.0.1:{sink.port}", "starttls": False},
            "queue": {"retry_initial": 1, "retry_max": 2}}


@pytest.fixture
async def city(server: Any, sink: Sink) -> Any:
    await seed_city(server)
    return server


def message(sender: str, to: str, subject: str, extra: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{abs(hash((sender, subject, extra)))}@remote.example>\r\n{extra}"
            "\r\nHello.\r\n").encode()


async def send25(server: Any, sender: str, to: str, subject: str, extra: str = "",
                 env_from: str | None = None) -> None:
    """From outside, on port 25 (no authentication, not a trusted network)."""
    await send_raw(server, sender if env_from is None else env_from, to,
                   message(sender, to, subject, extra))


async def send_raw(server: Any, env_from: str, to: str, raw: bytes) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=server.ports["smtp"],
                               start_tls=False) as smtp:
        await smtp.sendmail(env_from, [to], raw)  # "" is MAIL FROM:<>


async def activate(server: Any, address: str, source: str, name: str = "rules") -> None:
    pool = server.services.db.pool
    await sieve_repo.put_script(pool, address, name, source, 20)
    await sieve_repo.set_active(pool, address, name)


def headers_of(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


async def test_managesieve_script_files_into_folder_seen_over_imap(city: Any) -> None:
    script = ('require ["fileinto", "imap4flags"];\r\n'
              'if header :contains "subject" "report" {\r\n'
              '  fileinto :flags "\\\\Flagged" "Reports";\r\n'
              '} elsif header :contains "subject" "lost" {\r\n'
              '  fileinto "Nowhere";\r\n'  # no such mailbox: INBOX, never lost
              '} elsif header :contains "subject" "spam" {\r\n  discard;\r\n}\r\n')
    ms_port, imap_port = city.ports["managesieve"], city.ports["imap"]

    def upload() -> tuple[str, str]:
        m = managesieve.MANAGESIEVE("127.0.0.1", ms_port, use_tls=True, tls_verify=False,
                                    timeout=60)
        assert m.login("", "zhang.san", PASSWORD) == "OK"
        put, act = m.putscript("office", script), m.setactive("office")
        m.logout()
        return put, act

    def imap_create() -> None:
        im = imaplib.IMAP4("127.0.0.1", imap_port)
        im.starttls(client_tls())
        im.login("zhang.san", PASSWORD)
        assert im.create("Reports")[0] == "OK"
        im.logout()

    assert await asyncio.to_thread(upload) == ("OK", "OK")
    await asyncio.to_thread(imap_create)
    for subject in ("Monthly report", "Lunch", "lost and found", "cheap spam"):
        await send25(city, "friend@remote.example", "zhang.san@cx.example", subject)
    assert await queue_empty(city, 60)

    def imap_read() -> dict[str, Any]:
        im = imaplib.IMAP4("127.0.0.1", imap_port)
        im.starttls(client_tls())
        im.login("zhang.san", PASSWORD)
        out: dict[str, Any] = {}
        for box in ("Reports", "INBOX"):
            im.select(box, readonly=True)
            typ, data = im.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            out[box] = [(part[0].decode(), part[1].decode().strip())
                        for part in data if isinstance(part, tuple)]
        im.logout()
        return out

    got = await asyncio.to_thread(imap_read)
    assert len(got["Reports"]) == 1
    assert "\\Flagged" in got["Reports"][0][0] and "Monthly report" in got["Reports"][0][1]
    # queued deliveries may land in either order: what matters is which folder
    assert sorted(s for _, s in got["INBOX"]) == ["Subject: Lunch", "Subject: lost and found"]


async def test_vacation_once_per_sender_never_to_list_bounce_or_auto(city: Any,
                                                                     sink: Sink) -> None:
    await activate(city, "zhang.san@cx.example",
                   'require "vacation";\r\nvacation :days 7 :subject "Away" "I am away.";\r\n')
    me = "zhang.san@cx.example"
    await send25(city, "friend@remote.example", me, "first")
    await send25(city, "friend@remote.example", me, "second")  # within :days: no reply
    await send25(city, "news@lists.example", me, "digest", "List-Id: <news.lists.example>\r\n")
    await send25(city, "robot@remote.example", me, "auto",
                 "Auto-Submitted: auto-generated\r\n")
    await send25(city, "mailer-daemon@remote.example", me, "bounce", env_from="")
    await send25(city, "other@remote.example", me, "third")
    assert await queue_empty(city, 60)
    replies = [(f, t) for f, t, _ in sink.received]
    assert replies == [("<>", ["friend@remote.example"]), ("<>", ["other@remote.example"])]
    reply = headers_of(sink.received[0][2])
    assert reply["Auto-Submitted"].startswith("auto-replied")  # RFC 3834 §5
    assert reply["Subject"] == "Away" and reply["To"] == "friend@remote.example"
    assert reply["In-Reply-To"]  # threaded on the original (RFC 5230 §5.3)
    assert len(await inbox(city, me)) == 6  # vacation keeps every message


async def test_redirect_local_and_remote_with_srs_and_bounce_back(city: Any,
                                                                  sink: Sink) -> None:
    await activate(city, "zhang.san@cx.example",
                   'require "copy";\r\nredirect "li.si@cx.example";\r\n'
                   'redirect :copy "friend@remote.example";\r\n')
    await send25(city, "alice@outside.example", "zhang.san@cx.example", "forward me")
    assert await queue_empty(city, 60)
    assert await inbox(city, "zhang.san@cx.example") == []  # redirect without :copy
    (local,) = await inbox(city, "li.si@cx.example")
    assert headers_of(local)["Delivered-To"] == "zhang.san@cx.example"
    assert headers_of(local)["From"] == "alice@outside.example"
    ((mail_from, rcpts, data),) = sink.received
    assert rcpts == ["friend@remote.example"]
    # SRS0: our domain in the envelope (SPF passes at the destination), reversible
    assert mail_from.startswith("SRS0=") and mail_from.endswith("=outside.example=alice@cx.example")
    assert b"X-Sieve-Redirected-From: zhang.san@cx.example" in data
    # A bounce to the SRS address goes back to the original sender.
    await send_raw(city, "", mail_from, b"From: MAILER-DAEMON@remote.example\r\nTo: x\r\n"
                   b"Subject: bounce\r\n\r\nundeliverable\r\n")
    assert await queue_empty(city, 60)
    assert sink.received[-1][:2] == ("<>", ["alice@outside.example"])
    # A forged SRS address is nobody here (no open relay).
    c = await RawSMTP.connect(city.ports["smtp"])
    await c.cmd("EHLO peer.example")
    await c.cmd("MAIL FROM:<>")
    forged = mail_from.replace("SRS0=", "SRS0=x", 1)
    assert (await c.cmd(f"RCPT TO:<{forged}>")).startswith("550")
    await c.cmd("QUIT")


async def test_redirect_loop_is_refused_and_kept(city: Any) -> None:
    await activate(city, "zhang.san@cx.example", 'redirect "li.si@cx.example";\r\n')
    await activate(city, "li.si@cx.example", 'redirect "zhang.san@cx.example";\r\n')
    await send25(city, "alice@outside.example", "zhang.san@cx.example", "ping-pong")
    assert await queue_empty(city, 60)
    # zhang.san -> li.si -> zhang.san: the second visit sees its own Delivered-To and keeps.
    (kept,) = await inbox(city, "zhang.san@cx.example")
    assert headers_of(kept).get_all("Delivered-To") == ["li.si@cx.example",
                                                       "zhang.san@cx.example"]
    assert await inbox(city, "li.si@cx.example") == []


async def test_reject_notice_to_sender_never_to_null_sender(city: Any, sink: Sink) -> None:
    await activate(city, "zhang.san@cx.example",
                   'require "reject";\r\nreject "I do not take mail here.";\r\n')
    await send25(city, "friend@remote.example", "zhang.san@cx.example", "hello")
    await send25(city, "mailer-daemon@remote.example", "zhang.san@cx.example", "a bounce",
                 env_from="")
    assert await queue_empty(city, 60)
    assert await inbox(city, "zhang.san@cx.example") == []
    ((mail_from, rcpts, data),) = sink.received  # one notice, none for the null sender
    assert (mail_from, rcpts) == ("<>", ["friend@remote.example"])
    assert b"report-type=disposition-notification" in data
    assert b"Disposition: automatic-action/MDN-sent-automatically; deleted" in data
    assert b"I do not take mail here." in data


def _run_cli(argv: list[str]) -> tuple[int, str]:
    import contextlib
    import io

    from gateway.cli.main import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(argv)
    return code, out.getvalue()


async def test_cli_user_vacation_on_off_and_force(city: Any, cfg: Any, sink: Sink,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    conf = cfg.state_path.parent / "cx.toml"
    conf.write_text(f'[server]\nstate_dir = "{cfg.state_path}"\n')
    monkeypatch.setenv("CXGW_CONFIG", str(conf))
    monkeypatch.setenv("CXGW_DATABASE_URL", cfg.database.url)

    async def cli(*argv: str) -> tuple[int, str]:
        return await asyncio.to_thread(_run_cli, list(argv))

    code, out = await cli("user", "vacation", "zhang.san", "--on", "--text",
                          "在外出差，\n下周回来。", "--subject", "Out of office", "--days", "3",
                          "--json")
    assert code == 0, out
    assert '"vacation": "on"' in out
    await send25(city, "friend@remote.example", "zhang.san@cx.example", "hello")
    assert await queue_empty(city, 60)
    ((mail_from, rcpts, data),) = sink.received
    assert (mail_from, rcpts) == ("<>", ["friend@remote.example"])
    reply = headers_of(data)
    assert reply["Subject"] == "Out of office"
    assert reply.get_content().replace("\r\n", "\n") == "在外出差，\n下周回来。\n"
    # The user's own script is not replaced without --force; --off brings it back.
    pool = city.services.db.pool
    await activate(city, "li.si@cx.example", "keep;\r\n", "mine")
    code, out = await cli("user", "vacation", "li.si@cx.example", "--on")
    assert code == 4 and "mine" in out and "--force" in out
    assert [(s.name, s.active) for s in await sieve_repo.list_scripts(pool, "li.si@cx.example")
            ] == [("mine", True)]
    code, out = await cli("user", "vacation", "li.si@cx.example", "--on", "--force")
    assert code == 0, out
    assert [(s.name, s.active) for s in await sieve_repo.list_scripts(pool, "li.si@cx.example")
            ] == [("cx-vacation", True), ("mine", False)]
    code, out = await cli("user", "vacation", "li.si@cx.example", "--off")
    assert code == 0 and "'mine' active again" in out
    assert [(s.name, s.active) for s in await sieve_repo.list_scripts(pool, "li.si@cx.example")
            ] == [("cx-vacation", False), ("mine", True)]
    code, out = await cli("user", "vacation", "zhang.san@cx.example", "--on", "--days", "0")
    assert code == 5 and "--days" in out
    code, out = await cli("user", "vacation", "nobody@cx.example", "--off")
    assert code == 3


async def test_redirect_to_unknown_local_address_keeps(city: Any) -> None:
    await activate(city, "zhang.san@cx.example", 'redirect "nobody@cx.example";\r\n')
    await send25(city, "alice@outside.example", "zhang.san@cx.example", "where to")
    assert await queue_empty(city, 60)
    async with city.services.db.pool.acquire() as conn:
        rows = await conn.fetch(
            "select b.name, mm.flags from mailbox_messages mm join mailboxes b on b.id ="
            " mm.mailbox_id join accounts a on a.id = b.account_id where a.address = $1",
            "zhang.san@cx.example")
        detail = await conn.fetchval("select detail from deliveries where recipient = $1",
                                     "zhang.san@cx.example")
    # the redirect is refused (no such user): the message is kept, never lost
    assert [(r["name"], r["flags"]) for r in rows] == [("INBOX", [])]
    assert detail == "sieve: redirect refused, kept"
