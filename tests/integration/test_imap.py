"""IMAP on real listeners with a real PostgreSQL: imaplib (in a thread) and raw sockets."""

from __future__ import annotations

import asyncio
import imaplib
import re
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

import aiosmtplib
import pytest

from tests.integration.mailutil import PASSWORD, client_tls, seed_city, wait_inbox

T = TypeVar("T")
USER = "zhang.san@cx.example"
MSG = (
    b"From: Outside <outside@example.org>\r\nTo: zhang.san@cx.example\r\n"
    b"Subject: hello imap\r\nMessage-ID: <1@example.org>\r\n"
    b"Date: Mon, 3 Jun 2024 10:00:00 +0000\r\n\r\nhello world\r\n"
)
MULTI = (
    b"From: a@example.org\r\nTo: zhang.san@cx.example\r\nSubject: parts\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
    b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nfirst part\r\n"
    b"--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
    b"\r\nAAECAw==\r\n--XX--\r\n"
)


@pytest.fixture
def cfg_overrides() -> dict[str, dict[str, object]]:
    return {"imap": {"max_unauth_bytes": 4096}}


@pytest.fixture
async def city(server: Any) -> Any:
    await seed_city(server)
    return server


async def th(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


def imaps(server: Any) -> imaplib.IMAP4_SSL:
    return imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=client_tls(),
                             timeout=10)


def logged_in(server: Any, user: str = "zhang.san") -> imaplib.IMAP4_SSL:
    m = imaps(server)
    m.login(user, PASSWORD)
    return m


async def smtp_deliver(server: Any, raw: bytes = MSG, to: str = USER) -> None:
    await aiosmtplib.send(raw, sender="outside@example.org", recipients=[to],
                          hostname="127.0.0.1", port=server.ports["smtp"], start_tls=False)


async def test_starttls_and_logindisabled(city: Any) -> None:
    def run() -> None:
        m = imaplib.IMAP4("127.0.0.1", city.ports["imap"], timeout=10)
        assert "LOGINDISABLED" in m.capabilities and "STARTTLS" in m.capabilities
        typ, data = m._simple_command("LOGIN", "zhang.san", PASSWORD)  # refused before TLS
        assert typ == "NO"
        m.starttls(client_tls())
        assert "LOGINDISABLED" not in m.capabilities
        assert m.login("zhang.san", PASSWORD)[0] == "OK"
        assert m.select("INBOX")[0] == "OK"
        m.logout()

    await th(run)


async def test_login_failure_and_list_special_use(city: Any) -> None:
    def run() -> None:
        m = imaps(city)
        with pytest.raises(imaplib.IMAP4.error):
            m.login("zhang.san", "wrong")
        m.login("zhang.san", PASSWORD)
        typ, data = m.list()
        lines = [x.decode() for x in data]
        assert any('"INBOX"' in x or " INBOX" in x for x in lines)
        assert any("\\Sent" in x and "Sent" in x for x in lines)
        assert any("\\Trash" in x for x in lines) and any("\\Junk" in x for x in lines)
        assert m.create("Projects/2024")[0] == "OK"
        lines = [x.decode() for x in m.list("\"\"", "Projects*")[1]]
        assert any("\\HasChildren" in x and '"Projects"' in x for x in lines), lines
        assert m.rename("Projects", "Work")[0] == "OK"
        names = " ".join(x.decode() for x in m.list()[1])
        assert "Work/2024" in names and "Projects" not in names
        assert m.delete("Work")[0] == "NO"  # has children
        assert m.delete("Work/2024")[0] == "OK"
        assert m.unsubscribe("Work")[0] == "OK"
        assert not [x for x in m.lsub()[1] if x and b"Work" in x]
        typ, data = m.status("INBOX", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)")
        assert typ == "OK" and b"MESSAGES 0" in data[0]
        m.logout()

    await th(run)


async def test_fetch_store_search_append_copy_move_expunge(city: Any) -> None:
    await smtp_deliver(city)
    await wait_inbox(city, USER, 1)
    await smtp_deliver(city, MULTI)
    await wait_inbox(city, USER, 2)

    def run() -> None:
        m = logged_in(city)
        typ, data = m.select("INBOX")
        assert data == [b"2"]
        typ, data = m.fetch("1:*", "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)")
        text = b" ".join(x if isinstance(x, bytes) else x[0] for x in data).decode()
        assert '"hello imap"' in text and "MIXED" in text.upper() and "BOUNDARY" in text.upper()
        typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[TEXT]<0.5>)")
        assert data[0][1] == b"Subject: hello imap\r\n\r\n"
        assert data[1][1] == b"hello"
        typ, data = m.fetch("2", "(BODY.PEEK[1] BODY.PEEK[2.MIME] BINARY.PEEK[2])")
        assert data[0][1] == b"first part"
        assert data[2][1] == b"\x00\x01\x02\x03"
        typ, data = m.fetch("1", "(FLAGS)")
        assert b"\\Seen" not in data[0]
        typ, data = m.fetch("1", "(RFC822)")
        assert data[0][1].endswith(b"hello world\r\n")
        assert b"\\Seen" in b"".join(x if isinstance(x, bytes) else x[0] for x in data)
        typ, data = m.fetch("1", "(RFC822.HEADER)")  # what fetchmail asks for
        assert data[0][1].startswith(b"Received: ") and data[0][1].endswith(b"\r\n\r\n")
        typ, data = m.store("2", "+FLAGS", "(\\Flagged $Important)")
        assert b"$Important" in data[0] and b"\\Flagged" in data[0]
        assert m.search(None, "FLAGGED")[1] == [b"2"]
        assert m.search(None, "UNSEEN")[1] == [b"2"]
        assert m.search(None, 'SUBJECT "imap"')[1] == [b"1"]
        assert m.search(None, 'BODY "first part"')[1] == [b"2"]
        assert m.uid("SEARCH", "KEYWORD", "$Important")[1] == [b"2"]
        typ, data = m.append("Drafts", "(\\Draft)", None, b"Subject: draft\r\n\r\nx\r\n")
        assert typ == "OK" and b"APPENDUID" in data[0]
        typ, data = m._simple_command("UID", "COPY", "1:2", "Archive")
        assert re.search(rb"COPYUID \d+ 1:2 1:2", data[0]), data
        typ, data = m.uid("MOVE", "1", "Trash")
        assert typ == "OK"
        assert m.untagged_responses.get("OK") and any(
            b"COPYUID" in x for x in m.untagged_responses["OK"]
        )
        assert m.select("INBOX")[1] == [b"1"]
        m.store("1", "+FLAGS", "\\Deleted")
        typ, data = m.expunge()
        assert data == [b"1"]
        assert m.select("Archive")[1] == [b"2"]
        typ, data = m.getquotaroot("INBOX")
        assert typ == "OK"
        quota = m.untagged_responses.get("QUOTA") or data[1]
        assert b"STORAGE" in b" ".join(q for q in quota if isinstance(q, bytes)), data
        m.logout()

    await th(run)
    async with city.services.db.pool.acquire() as conn:
        usage = await conn.fetchrow(
            "select u.bytes, u.messages from mail_usage u join accounts a on a.id = u.account_id"
            " where a.address = $1", USER)
        actual = await conn.fetchrow(
            "select coalesce(sum(mm.size), 0) as b, count(*) as n from mailbox_messages mm"
            " join mailboxes b on b.id = mm.mailbox_id join accounts a on a.id = b.account_id"
            " where a.address = $1", USER)
    assert (usage["bytes"], usage["messages"]) == (actual["b"], actual["n"])


async def test_condstore_qresync(city: Any) -> None:
    await smtp_deliver(city)
    await smtp_deliver(city)
    await wait_inbox(city, USER, 2)

    def run() -> None:
        m = logged_in(city)
        typ, data = m._simple_command("ENABLE", "QRESYNC")
        assert typ == "OK"
        m.select("INBOX")
        uidvalidity = int(m.untagged_responses["UIDVALIDITY"][-1])
        hms = int(m.untagged_responses["HIGHESTMODSEQ"][-1])
        typ, data = m._simple_command("UID", "STORE", "1", "+FLAGS.SILENT", "(\\Seen)")
        typ, data = m._simple_command("UID", "STORE", "2", "(UNCHANGEDSINCE 1)", "+FLAGS",
                                      "(\\Answered)")
        assert typ == "OK"
        assert any(b"MODIFIED" in x for x in m.untagged_responses.get("OK", [])) or any(
            b"MODIFIED" in (x or b"") for x in data)
        m.store("2", "+FLAGS", "\\Deleted")
        m.expunge()
        m.close()
        typ, data = m._simple_command(
            "SELECT", "INBOX", f"(QRESYNC ({uidvalidity} {hms}))")
        assert typ == "OK"
        m.state = "SELECTED"  # imaplib tracks state only through select()
        fetches = m.untagged_responses.get("FETCH", [])
        vanished = m.untagged_responses.get("VANISHED", [])
        assert any(b"(EARLIER) 2" in v for v in vanished), vanished
        assert any(b"UID 1" in f and b"\\Seen" in f for f in fetches), fetches
        typ, data = m._simple_command("UID", "FETCH", "1:*", "(FLAGS)", f"(CHANGEDSINCE {hms})")
        assert typ == "OK"
        m.logout()

    await th(run)


async def test_two_sessions_and_idle_push_from_smtp(city: Any) -> None:
    import aioimaplib

    a = aioimaplib.IMAP4_SSL("127.0.0.1", city.ports["imaps"], ssl_context=client_tls())
    await a.wait_hello_from_server()
    assert (await a.login("zhang.san", PASSWORD)).result == "OK"
    assert (await a.select("INBOX")).result == "OK"
    b = aioimaplib.IMAP4_SSL("127.0.0.1", city.ports["imaps"], ssl_context=client_tls())
    await b.wait_hello_from_server()
    await b.login("zhang.san", PASSWORD)
    await b.select("INBOX")

    idle = await a.idle_start(timeout=10)
    await smtp_deliver(city)
    push = await asyncio.wait_for(a.wait_server_push(), 10)  # a bound, not a speed claim
    assert any(b"1 EXISTS" in (x if isinstance(x, bytes) else x.encode()) for x in push), push
    a.idle_done()
    await asyncio.wait_for(idle, 10)

    # b sees the delivery on NOOP; then b flags it and a sees the FETCH on NOOP
    res = await b.noop()
    assert any(b"EXISTS" in x for x in res.lines if isinstance(x, bytes)), res.lines
    await b.store("1", "+FLAGS", "(\\Flagged)")
    res = await a.noop()
    assert any(b"FETCH" in x and b"\\Flagged" in x for x in res.lines if isinstance(x, bytes))
    await b.store("1", "+FLAGS", "(\\Deleted)")
    await b.expunge()
    res = await a.noop()
    assert any(b"1 EXPUNGE" in x for x in res.lines if isinstance(x, bytes)), res.lines
    await a.logout()
    await b.logout()


class Raw:
    """A raw line client over TLS for inputs libraries refuse to send."""

    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r, self.w = r, w

    @classmethod
    async def connect(cls, port: int, tls: ssl.SSLContext | None = None) -> Raw:
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        c = cls(r, w)
        assert (await c.line()).startswith(b"* OK")
        return c

    async def line(self) -> bytes:
        return await asyncio.wait_for(self.r.readline(), 10)

    async def cmd(self, data: bytes, tag: bytes) -> list[bytes]:
        self.w.write(data)
        await self.w.drain()
        out = []
        while True:
            ln = await self.line()
            if not ln:
                return out
            out.append(ln)
            if ln.startswith(tag + b" ") or ln.startswith(b"+ ") or ln.startswith(b"* BYE"):
                return out


async def test_garbage_and_huge_literal(city: Any) -> None:
    c = await Raw.connect(city.ports["imaps"], client_tls())
    out = await c.cmd(b"a1 FROBNICATE\r\n", b"a1")
    assert out[-1].startswith(b"a1 BAD")
    out = await c.cmd(b"\x00\xff\xfe garbage ((( \r\n", b"*")
    assert b"BAD" in out[-1]
    # a 100 MB literal in LOGIN is refused without waiting for the data
    out = await c.cmd(b"a2 LOGIN {104857600}\r\n", b"a2")
    assert out[-1].startswith(b"a2 BAD") or out[-1].startswith(b"a2 NO"), out
    out = await c.cmd(b"a3 NOOP\r\n", b"a3")
    assert out[-1].startswith(b"a3 OK")
    # a line far over the pre-login limit is refused too, and the connection lives
    out = await c.cmd(b"a4 LOGIN " + b"x" * 100_000 + b" y\r\n", b"a4")
    assert b"BAD" in out[-1]
    out = await c.cmd(b"a5 LOGIN zhang.san \"" + PASSWORD.encode() + b"\"\r\n", b"a5")
    assert out[-1].startswith(b"a5 OK")
    # a LITERAL+ over the limit: BYE and close (the data is already on its way)
    c2 = await Raw.connect(city.ports["imaps"], client_tls())
    out = await c2.cmd(b"b1 LOGIN {104857600+}\r\n", b"b1")
    assert out[-1].startswith(b"* BYE")
    c.w.close()
    c2.w.close()


async def test_compress_deflate_and_idle_timeout(city: Any) -> None:
    import zlib

    imap = city.services.components["imap"]
    imap.cfg.unauth_timeout = 0.5
    c = await Raw.connect(city.ports["imaps"], client_tls())
    out = await c.cmd(b"a LOGIN zhang.san \"" + PASSWORD.encode() + b"\"\r\n", b"a")
    assert out[-1].startswith(b"a OK")
    out = await c.cmd(b"b COMPRESS DEFLATE\r\n", b"b")
    assert out[-1].startswith(b"b OK")
    comp, decomp = zlib.compressobj(wbits=-15), zlib.decompressobj(wbits=-15)
    c.w.write(comp.compress(b"c SELECT INBOX\r\n") + comp.flush(zlib.Z_SYNC_FLUSH))
    got = b""
    while b"c OK" not in got:
        got += decomp.decompress(await asyncio.wait_for(c.r.read(4096), 10))
    assert b"* 0 EXISTS" in got
    c.w.close()
    # before login the short timeout applies: the server says BYE and closes
    d = await Raw.connect(city.ports["imaps"], client_tls())
    line = await asyncio.wait_for(d.r.readline(), 10)
    assert line.startswith(b"* BYE")
    d.w.close()


async def test_recent_is_owned_by_exactly_one_session(city: Any) -> None:
    """RFC 3501 §2.3.2 on the real store: the SELECT claim, then a delivery while two
    sessions have INBOX selected (one IDLE, one polling) is \\Recent in exactly one."""
    await smtp_deliver(city)
    await wait_inbox(city, USER, 1)
    tls = client_tls()
    a, b = await Raw.connect(city.ports["imaps"], tls), await Raw.connect(city.ports["imaps"], tls)
    for c in (a, b):
        await c.cmd(b'l LOGIN zhang.san "' + PASSWORD.encode() + b'"\r\n', b"l")
    out = b"".join(await a.cmd(b"s STATUS INBOX (RECENT MESSAGES)\r\n", b"s"))
    assert b"RECENT 1" in out
    out = b"".join(await a.cmd(b"e EXAMINE INBOX\r\n", b"e"))
    assert b"* 1 RECENT" in out  # EXAMINE sees it without taking it
    out = b"".join(await a.cmd(b"s SELECT INBOX\r\n", b"s"))
    assert b"* 1 RECENT" in out
    out = b"".join(await b.cmd(b"s SELECT INBOX\r\n", b"s"))
    assert b"* 0 RECENT" in out
    out = b"".join(await a.cmd(b"f FETCH 1 FLAGS\r\n", b"f"))
    assert b"\\Recent" in out
    assert (await a.cmd(b"i IDLE\r\n", b"i"))[-1].startswith(b"+ ")
    await smtp_deliver(city)
    pushed = b""
    while b"EXISTS" not in pushed:
        pushed += await a.line()
    assert b"* 2 EXISTS" in pushed
    await a.cmd(b"DONE\r\n", b"i")
    out_b = b"".join(await b.cmd(b"n NOOP\r\n", b"n"))
    assert b"* 2 EXISTS" in out_b
    # whichever session was told first owns it; never both, never neither
    flags = [b"".join(await c.cmd(b"f FETCH 2 FLAGS\r\n", b"f")) for c in (a, b)]
    assert [b"\\Recent" in f for f in flags].count(True) == 1, flags
    out = b"".join(await b.cmd(b"f FETCH 1 FLAGS\r\n", b"f"))
    assert b"\\Recent" not in out
    out = b"".join(await a.cmd(b"r SEARCH RECENT\r\n", b"r"))
    assert b"* SEARCH 1" in out
    for c in (a, b):
        c.w.close()


async def test_authenticate_scram_against_the_directory(city: Any) -> None:
    import base64

    from directory.scram import client_proof

    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
        c = await Raw.connect(city.ports["imaps"], client_tls())
        caps = b"".join(await c.cmd(b"c CAPABILITY\r\n", b"c"))
        assert b"AUTH=SCRAM-SHA-256" in caps and b"AUTH=SCRAM-SHA-1" in caps
        bare = "n=zhang.san,r=clientnonce123"
        out = await c.cmd(f"a AUTHENTICATE {mech} ".encode()
                          + base64.b64encode(b"n,," + bare.encode()) + b"\r\n", b"a")
        server_first = base64.b64decode(out[-1][2:].strip()).decode()
        nonce = server_first.split(",")[0][2:]
        without = f"c=biws,r={nonce}"
        proof, sig = client_proof(mech, PASSWORD, bare, server_first, without)
        out = await c.cmd(base64.b64encode(f"{without},p={proof}".encode()) + b"\r\n", b"a")
        assert base64.b64decode(out[-1][2:].strip()).decode() == "v=" + sig
        out = await c.cmd(b"\r\n", b"a")
        assert out[-1].startswith(b"a OK"), out
        out = await c.cmd(b"s SELECT INBOX\r\n", b"s")
        assert out[-1].startswith(b"s OK")
        c.w.close()
    # a wrong proof fails like a wrong password
    c = await Raw.connect(city.ports["imaps"], client_tls())
    bare = "n=zhang.san,r=abc"
    out = await c.cmd(b"a AUTHENTICATE SCRAM-SHA-256 " + base64.b64encode(b"n,," + bare.encode())
                      + b"\r\n", b"a")
    server_first = base64.b64decode(out[-1][2:].strip()).decode()
    without = f"c=biws,r={server_first.split(',')[0][2:]}"
    proof, _ = client_proof("SCRAM-SHA-256", "not the password", bare, server_first, without)
    out = await c.cmd(base64.b64encode(f"{without},p={proof}".encode()) + b"\r\n", b"a")
    assert out[-1].startswith(b"a NO [AUTHENTICATIONFAILED]")
    c.w.close()


async def test_idle_survives_the_listen_connection_dropping(city: Any) -> None:
    """The hub's LISTEN backend is terminated (twice): it listens again, and IDLE still
    gets new mail, including mail delivered while nobody was listening."""
    hub = city.services.components["imap"].hub
    pool = city.services.db.pool
    a = await Raw.connect(city.ports["imaps"], client_tls())
    await a.cmd(b'l LOGIN zhang.san "' + PASSWORD.encode() + b'"\r\n', b"l")
    await a.cmd(b"s SELECT INBOX\r\n", b"s")
    assert (await a.cmd(b"i IDLE\r\n", b"i"))[-1].startswith(b"+ ")
    for n in (1, 2):
        pid = hub._listener.backend_pid()
        assert await pool.fetchval("select pg_terminate_backend($1)", pid)
        if n == 2:
            await smtp_deliver(city)  # most likely before the hub is back
        for _ in range(100):
            if hub.listening and hub._listener.backend_pid() not in (pid, None):
                break
            await asyncio.sleep(0.05)
        assert hub.listening and hub._listener.backend_pid() not in (pid, None)
        if n == 1:
            await smtp_deliver(city)
        pushed = b""
        while b"EXISTS" not in pushed:
            pushed += await a.line()
        assert f"* {n} EXISTS".encode() in pushed
    await a.cmd(b"DONE\r\n", b"i")
    a.w.close()


async def test_expunged_bodies_are_collected_unless_still_needed(city: Any) -> None:
    """Bodies of expunged messages go once nothing references them; a body the delivery
    log, a document or another mailbox still points at stays."""
    store = city.services.components["imap"].store
    pool = city.services.db.pool
    await smtp_deliver(city)  # delivered: the delivery log keeps its body
    await wait_inbox(city, USER, 1)

    def run() -> None:
        m = logged_in(city)
        for subject in (b"draft", b"copied", b"doc"):
            m.append("Drafts", "(\\Draft)", None, b"Subject: " + subject + b"\r\n\r\nx\r\n")
        m.select("Drafts")
        m.copy("2", "Archive")
        m.store("1:*", "+FLAGS", "(\\Deleted)")
        m.expunge()
        m.select("INBOX")
        m.store("1", "+FLAGS", "(\\Deleted)")
        m.expunge()
        m.logout()

    delivered = await pool.fetchval("select message_id from deliveries limit 1")
    await th(run)
    ids = {r["s"].strip(): r["id"] for r in await pool.fetch(
        "select id, convert_from(substring(raw from 10 for 6), 'utf8') as s from messages"
        " where raw like 'Subject: %'")}
    await pool.execute("insert into document_events(kind, message_id) values ('test', $1)",
                       ids["doc"])
    assert await store.collect_garbage() >= 1
    left = {r["id"] for r in await pool.fetch("select id from messages")}
    assert ids["draft"] not in left  # expunged everywhere: collected
    assert ids["copied"] in left  # still in Archive
    assert ids["doc"] in left  # a document event refers to it
    assert delivered in left  # the delivery log refers to it
    assert await pool.fetchval("select count(*) from message_gc") == 0
    assert await store.collect_garbage() == 0
