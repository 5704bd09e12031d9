"""POP3 against the running server with Python's poplib and Debian's fetchmail.

Mail is delivered over SMTP; POP3 reads, UIDL-tracks and deletes it over STLS and POP3S;
IMAP sees the deletions (they are expunges of the same store).
"""

from __future__ import annotations

import asyncio
import imaplib
import poplib
import shutil
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from tests.integration.mailutil import PASSWORD, client_tls, inbox, seed_city, wait_inbox
from tests.integration.test_imap_clients import cert_file, run

pytestmark = pytest.mark.integration
USER = "zhang.san@cx.example"


@pytest.fixture
def cfg_overrides() -> dict[str, dict[str, object]]:
    return {"pop3": {"unauth_timeout": 5}}


@pytest.fixture
async def city(server: Any) -> Any:
    await seed_city(server)
    return server


async def deliver(srv: Any, n: int, body: bytes = b"hello\r\n") -> None:
    for i in range(n):
        msg = (b"From: a@outside.example\r\nTo: " + USER.encode() + b"\r\nSubject: m%d\r\n"
               b"Message-ID: <m%d@outside.example>\r\n\r\n" % (i, i) + body)
        await aiosmtplib.send(msg, sender="a@outside.example", recipients=[USER],
                              hostname="127.0.0.1", port=srv.ports["smtp"], start_tls=False)
    await wait_inbox(srv, USER, n)


def stls(port: int) -> poplib.POP3:
    p = poplib.POP3("127.0.0.1", port, timeout=10)
    p.stls(client_tls())
    return p


async def test_read_uidl_delete_over_stls_and_pop3s(city: Any) -> None:
    await deliver(city, 3, b".dot line\r\nsecond\r\n")

    def session_one() -> tuple[Any, ...]:
        p = stls(city.ports["pop3"])
        caps = p.capa()
        p.user("zhang.san")
        p.pass_(PASSWORD)
        stat = p.stat()
        uidl = [ln.split()[1] for ln in p.uidl()[1]]
        retr = p.retr(1)[1]
        top = p.top(2, 0)[1]
        p.dele(2)
        with pytest.raises(poplib.error_proto, match="already deleted"):
            p.retr(2)
        p.quit()
        return caps, stat, uidl, retr, top

    caps, stat, uidl, retr, top = await asyncio.to_thread(session_one)
    assert {"TOP", "UIDL", "USER", "SASL"} <= set(caps) and "STLS" not in caps
    assert stat[0] == 3
    assert len(set(uidl)) == 3
    assert b".dot line" in retr and retr[-1] == b"second"  # dot-stuffing undone by poplib
    assert top[-1] == b"" and b"Subject: m1" in top  # the header and the blank line only
    assert b".dot line" not in top and b"second" not in top

    def session_two() -> tuple[Any, ...]:
        p = poplib.POP3_SSL("127.0.0.1", city.ports["pop3s"], context=client_tls(), timeout=10)
        p.user("zhang.san")
        p.pass_(PASSWORD)
        out = p.stat(), [ln.split()[1] for ln in p.uidl()[1]]
        p.quit()
        return out

    stat2, uidl2 = await asyncio.to_thread(session_two)
    assert stat2[0] == 2
    assert uidl2 == [uidl[0], uidl[2]]  # UIDL is stable across sessions

    def imap_view() -> tuple[bytes, bytes]:
        m = imaplib.IMAP4_SSL("127.0.0.1", city.ports["imaps"], ssl_context=client_tls())
        m.login("zhang.san", PASSWORD)
        typ, data = m.select("INBOX")
        flags = m.fetch(b"1:*", "(FLAGS)")[1]
        m.logout()
        return data[0], b" ".join(x for x in flags if isinstance(x, bytes))

    count, flags = await asyncio.to_thread(imap_view)
    assert count == b"2"  # the POP3 deletion is an IMAP expunge
    assert flags.count(b"\\Seen") == 1  # RETR of message 1 marked it seen at QUIT


async def test_dropped_connection_deletes_nothing(city: Any) -> None:
    await deliver(city, 2)

    def drop() -> None:
        p = stls(city.ports["pop3"])
        p.user("zhang.san")
        p.pass_(PASSWORD)
        p.dele(1)
        p.sock.close()  # no QUIT: RFC 1939 §6, no UPDATE state

    await asyncio.to_thread(drop)
    await asyncio.sleep(0.2)

    def count() -> int:
        p = stls(city.ports["pop3"])
        p.user("zhang.san")
        p.pass_(PASSWORD)
        n = p.stat()[0]
        p.rset()
        p.quit()
        return int(n)

    assert await asyncio.to_thread(count) == 2


async def test_auth_plain_and_refusals(city: Any) -> None:
    def run() -> list[bytes]:
        out = []
        p = poplib.POP3("127.0.0.1", city.ports["pop3"], timeout=10)
        assert "STLS" in p.capa() and "USER" not in p.capa()
        try:
            p.user("zhang.san")
        except poplib.error_proto as e:
            out.append(e.args[0])  # no plaintext before TLS
        p.stls(client_tls())
        try:
            p.user("zhang.san")
            p.pass_("wrong")
        except poplib.error_proto as e:
            out.append(e.args[0])
        import base64
        token = base64.b64encode(b"\0zhang.san\0" + PASSWORD.encode()).decode()
        out.append(p._shortcmd(f"AUTH PLAIN {token}"))
        out.append(p.stat()[0].to_bytes(1, "big"))
        p.quit()
        return out

    out = await asyncio.to_thread(run)
    assert out[0].startswith(b"-ERR [AUTH] Plaintext")
    assert out[1].startswith(b"-ERR [AUTH] Authentication failed")
    assert out[2].startswith(b"+OK")
    assert out[3] == b"\x00"


async def test_error_limit_hangs_up(city: Any) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", city.ports["pop3"])
    assert (await r.readline()).startswith(b"+OK")
    w.write(b"NOOP\r\n" * 20)  # NOOP before login is an error: after ten the server hangs up
    data = await asyncio.wait_for(r.read(), 10)
    assert data.count(b"-ERR") == 10
    w.close()


async def test_unauthenticated_trickle_is_cut_off(city: Any) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", city.ports["pop3"])
    assert (await r.readline()).startswith(b"+OK")
    closed = False
    for _ in range(15):  # a byte a second never finishes a line: the login deadline (5 s) wins
        w.write(b"C")
        try:
            data = await asyncio.wait_for(r.read(100), 1)
        except TimeoutError:
            continue
        if not data:
            closed = True
            break
        assert data.startswith(b"-ERR [SYS/TEMP]"), data
    assert closed or r.at_eof()
    w.close()


@pytest.mark.skipif(not shutil.which("fetchmail"), reason="fetchmail not installed (Debian)")
async def test_fetchmail_pulls_and_deletes(city: Any, tmp_path: Path) -> None:
    await deliver(city, 3)
    mda_out = tmp_path / "out.mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(  # the server certificate verified, as a real setup would
        f'poll localhost service {city.ports["pop3s"]} protocol POP3 auth password\n'
        f'  user "zhang.san" password "{PASSWORD}" ssl sslcertfile {cert_file(city)}'
        f' sslcertck mda "/bin/sh -c \'cat >> {mda_out}\'"\n')
    rc.chmod(0o600)
    await run("fetchmail", "-f", str(rc), "--nosyslog", "-v", cwd=tmp_path)
    got = mda_out.read_bytes()
    assert got.count(b"Subject: m") == 3
    assert await inbox(city, USER) == []  # fetchmail deletes what it fetched
