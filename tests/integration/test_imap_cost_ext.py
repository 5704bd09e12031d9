"""IMAP on the real server: SORT/THREAD/MULTIAPPEND with imaplib, and the per-session
bounds (COMPRESS after login only, spooled APPEND, FETCH back-pressure, program size)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from mailrelay.imap.server import WRITE_BUFFER_HIGH
from mailrelay.imap.session import OUTPUT_HIGH
from tests.integration.mailutil import PASSWORD, client_tls, seed_city
from tests.integration.test_imap import Raw, logged_in, th


@pytest.fixture
def cfg_overrides() -> dict[str, dict[str, object]]:
    return {"imap": {"append_spool_bytes": 4096}}


@pytest.fixture
async def city(server: Any) -> Any:
    await seed_city(server)
    return server


def msg(subject: str, date: str, extra: str = "", body: str = "x") -> bytes:
    return (
        f"From: a@example.org\r\nTo: zhang.san@cx.example\r\nSubject: {subject}\r\n"
        f"Date: {date}\r\n{extra}\r\n{body}\r\n"
    ).encode()


async def test_multiappend_sort_and_thread_with_imaplib(city: Any) -> None:
    def run() -> None:
        m = logged_in(city)
        caps = m.capabilities
        for cap in ("SORT", "ESORT", "THREAD=REFERENCES", "THREAD=ORDEREDSUBJECT",
                    "MULTIAPPEND", "UTF8=ACCEPT"):
            assert cap in caps
        m.create("Lists")
        parts = [
            msg("hello", "Mon, 3 Jun 2024 10:00:00 +0000", "Message-ID: <1@x>\r\n"),
            msg("other", "Mon, 3 Jun 2024 09:00:00 +0000", "Message-ID: <2@x>\r\n"),
            msg("Re: hello", "Tue, 4 Jun 2024 10:00:00 +0000",
                "Message-ID: <3@x>\r\nIn-Reply-To: <1@x>\r\n"),
            msg("Re: hello", "Wed, 5 Jun 2024 10:00:00 +0000",
                "Message-ID: <4@x>\r\nReferences: <1@x> <3@x>\r\n", body="y" * 9000),
        ]
        # RFC 3502 MULTIAPPEND in one command (the last literal is spooled: 4 KB limit)
        args = " ".join(f"(\\Seen) {{{len(p)}}}" for p in parts)
        lits = list(parts)
        tag = m._new_tag().decode()
        m.send(f"{tag} APPEND Lists {args.split(' ', 1)[0]} {{{len(parts[0])}}}\r\n".encode())

        def cont() -> None:
            line = m.readline()
            assert line.startswith(b"+"), line

        cont()
        for i, p in enumerate(lits):
            m.send(p)
            if i + 1 < len(lits):
                m.send(f" (\\Seen) {{{len(lits[i + 1])}}}\r\n".encode())
                cont()
        m.send(b"\r\n")
        line = m.readline()
        while not line.startswith(tag.encode()):
            line = m.readline()
        assert re.match(rb".* OK \[APPENDUID \d+ 1:4\]", line), line
        m.select("Lists")
        typ, data = m.uid("SORT", "(SUBJECT REVERSE DATE)", "UTF-8", "ALL")
        assert typ == "OK" and data[0] == b"4 3 1 2", data
        typ, data = m.sort("(REVERSE SIZE)", "UTF-8", "SEEN")
        assert data[0].split()[0] == b"4"
        # RFC 5267 ESORT
        typ, data = m._simple_command("UID", "SORT", "RETURN", "(MIN MAX COUNT ALL)",
                                      "(SUBJECT REVERSE DATE)", "UTF-8", "ALL")
        assert typ == "OK"
        assert m.untagged_responses.pop("ESEARCH")[0].endswith(
            b"UID MIN 4 MAX 2 COUNT 4 ALL 4,3,1:2"
        )
        typ, data = m.thread("REFERENCES", "UTF-8", "ALL")
        assert typ == "OK" and data[0] == b"(2)(1 3 4)", data
        typ, data = m.thread("ORDEREDSUBJECT", "UTF-8", "ALL")
        assert data[0] == b"(2)(1 (3)(4))", data
        typ, data = m.uid("THREAD", "REFERENCES", "UTF-8", "SUBJECT", "other")
        assert data[0] == b"(2)"
        typ, data = m._simple_command("SORT", "(DATE)", "KOI8-R", "ALL")
        assert typ == "NO"  # BADCHARSET
        # atomic: one message into a missing mailbox fails the whole MULTIAPPEND
        tag = m._new_tag().decode()
        m.send(f"{tag} APPEND Nope {{3}}\r\n".encode())
        assert m.readline().startswith(b"+")
        m.send(b"a\r\n {3}\r\n")
        line = m.readline()
        if line.startswith(b"+"):
            m.send(b"b\r\n\r\n")
            line = m.readline()
        assert line.startswith(tag.encode() + b" NO"), line
        assert m.status("Lists", "(MESSAGES)")[1][0].endswith(b"(MESSAGES 4)")
        m.logout()

    await th(run)


async def test_compress_only_after_login(city: Any) -> None:
    c = await Raw.connect(city.ports["imaps"], client_tls())
    out = await c.cmd(b"a CAPABILITY\r\n", b"a")
    assert b"COMPRESS=DEFLATE" not in b"".join(out)
    out = await c.cmd(b"b COMPRESS DEFLATE\r\n", b"b")
    assert out[-1].startswith(b"b BAD")
    out = await c.cmd(b"c LOGIN zhang.san \"" + PASSWORD.encode() + b"\"\r\n", b"c")
    assert out[-1].startswith(b"c OK") and b"COMPRESS=DEFLATE" in out[-1]
    c.w.close()


async def test_search_program_and_sequence_set_limits(city: Any) -> None:
    c = await Raw.connect(city.ports["imaps"], client_tls())
    await c.cmd(b"a LOGIN zhang.san \"" + PASSWORD.encode() + b"\"\r\n", b"a")
    await c.cmd(b"b SELECT INBOX\r\n", b"b")
    big = ",".join(str(n) for n in range(1, 60000, 4)).encode()  # a ~64 KB set
    assert len(big) > 60000
    out = await c.cmd(b"c UID SEARCH UID " + big + b"\r\n", b"c")
    assert out[-1].startswith(b"c OK")
    prog = b" ".join([b"OR SEEN DELETED"] * 20000)  # 0.3 MB
    out = await c.cmd(b"d SEARCH " + prog + b"\r\n", b"d")
    assert out[-1].startswith(b"d BAD"), out[-1][:80]
    out = await c.cmd(b"e NOOP\r\n", b"e")
    assert out[-1].startswith(b"e OK")
    c.w.close()


async def test_fetch_to_a_client_that_does_not_read_stays_bounded(city: Any) -> None:
    imap = city.services.components["imap"]

    def fill() -> None:
        m = logged_in(city)
        body = b"Subject: big\r\n\r\n" + (b"0123456789" * 100 + b"\r\n") * 200  # ~200 KB
        for _ in range(6):
            m.append("INBOX", None, None, body)
        m.logout()

    await th(fill)
    c = await Raw.connect(city.ports["imaps"], client_tls())
    await c.cmd(b"a LOGIN zhang.san \"" + PASSWORD.encode() + b"\"\r\n", b"a")
    await c.cmd(b"b SELECT INBOX\r\n", b"b")
    c.w.write(b"f FETCH 1:* (" + b" ".join([b"BODY.PEEK[]"] * 20) + b")\r\n")
    await c.w.drain()
    # the client reads nothing: the server's command must stop and wait for the socket
    conn = next(x for x in imap.conns if x.session.view is not None)
    for _ in range(500):
        if conn._write_ready is not None and not conn._write_ready.done():
            break
        await asyncio.sleep(0.02)
    assert conn._write_ready is not None and not conn._write_ready.done()
    assert conn.transport.get_write_buffer_size() < WRITE_BUFFER_HIGH + 2 * OUTPUT_HIGH + (1 << 20)
    assert conn.core.pending_output == 0
    # and when the client reads, everything arrives
    got = 0
    while True:
        line = await asyncio.wait_for(c.r.readline(), 10)
        if line.startswith(b"f "):
            assert line.startswith(b"f OK")
            break
        m = re.search(rb"\{(\d+)\}\r\n$", line)
        if m:
            await c.r.readexactly(int(m.group(1)))
            got += 1
    assert got == 6 * 20
    c.w.close()


async def test_pipelined_fetches_read_ahead_on_postgres(city: Any, monkeypatch: Any) -> None:
    """mbsync's one-FETCH-per-message pipeline, on the real store, with the byte bound
    of the read-ahead small enough that it has to split."""
    from mailrelay.imap import session as sessmod

    monkeypatch.setattr(sessmod, "CHUNK_BYTES", 3000)

    def fill() -> None:
        m = logged_in(city)
        for i in range(12):
            size = 2500 if i == 5 else 200
            m.append("INBOX", None, None, b"Subject: n%d\r\n\r\n" % i + b"z" * size + b"\r\n")
        m.logout()

    await th(fill)
    store = city.services.components["imap"].store
    calls: list[int] = []
    real = store.fetch_upto

    async def counting(mailbox_id: int, uids: Any, max_bytes: int, **kw: Any) -> Any:
        rows = await real(mailbox_id, uids, max_bytes, **kw)
        calls.append(len(rows))
        return rows

    monkeypatch.setattr(store, "fetch_upto", counting)
    c = await Raw.connect(city.ports["imaps"], client_tls())
    await c.cmd(b"a LOGIN zhang.san \"" + PASSWORD.encode() + b"\"\r\n", b"a")
    await c.cmd(b"b EXAMINE INBOX\r\n", b"b")
    c.w.write(b"".join(b"f%d UID FETCH %d (BODY.PEEK[])\r\n" % (u, u) for u in range(1, 13)))
    seen = []
    for u in range(1, 13):
        while True:
            line = await c.line()
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            if m:
                body = await c.r.readexactly(int(m.group(1)))
                seen.append((line.split()[1], body.split(b"\r\n")[0]))
                continue
            if line.startswith(b"f%d " % u):
                assert line.startswith(b"f%d OK" % u)
                break
    assert seen == [(str(u).encode(), b"Subject: n%d" % (u - 1)) for u in range(1, 13)]
    # a few queries, each within the byte bound (the 2.5 KB message splits the burst)
    assert 2 <= len(calls) < 12 and max(calls) > 1, calls
    c.w.close()


async def test_utf8_accept(city: Any) -> None:
    """RFC 6855: after ENABLE UTF8=ACCEPT names are UTF-8 both ways, APPEND takes the
    UTF8 data item, SEARCH may carry no CHARSET; before it, names stay modified UTF-7."""
    c = await Raw.connect(city.ports["imaps"], client_tls())
    out = await c.cmd(b"a LOGIN zhang.san \"" + PASSWORD.encode() + b"\"\r\n", b"a")
    assert b"UTF8=ACCEPT" in out[-1]
    out = await c.cmd(b"b CREATE \"B&APw-cher\"\r\n", b"b")  # mUTF-7 before ENABLE
    assert out[-1].startswith(b"b OK")
    out = await c.cmd(b"c LIST \"\" \"B*\"\r\n", b"c")
    assert b'"B&APw-cher"' in out[0]
    out = await c.cmd(b"d ENABLE UTF8=ACCEPT\r\n", b"d")
    assert out[0] == b"* ENABLED UTF8=ACCEPT\r\n" and out[-1].startswith(b"d OK")
    out = await c.cmd(b"e LIST \"\" \"B*\"\r\n", b"e")
    assert out[0] == '* LIST (\\HasNoChildren) "/" "Bücher"\r\n'.encode()
    out = await c.cmd('f CREATE "Bücher/Ärger"\r\n'.encode(), b"f")
    assert out[-1].startswith(b"f OK")
    msg = "Subject: Grüße aus Köln\r\nFrom: jörg@example.org\r\n\r\nHallo\r\n".encode()
    out = await c.cmd('g APPEND "Bücher/Ärger" UTF8 (~{%d}\r\n'.encode() % len(msg), b"g")
    assert out[-1].startswith(b"+")
    out = await c.cmd(msg + b")\r\n", b"g")
    assert out[-1].startswith(b"g OK [APPENDUID"), out
    out = await c.cmd('h SELECT "Bücher/Ärger"\r\n'.encode(), b"h")
    assert b"* 1 EXISTS\r\n" in out
    out = await c.cmd(b"i SEARCH CHARSET UTF-8 ALL\r\n", b"i")
    assert out[-1].startswith(b"i BAD")
    out = await c.cmd('j SEARCH SUBJECT "grüße"\r\n'.encode(), b"j")
    assert out[0] == b"* SEARCH 1\r\n"
    out = await c.cmd(b"k SORT (SUBJECT) US-ASCII ALL\r\n", b"k")
    assert out[-1].startswith(b"k BAD")
    out = await c.cmd(b"l FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n", b"l")
    whole = b"".join(out)
    while not whole.rstrip().endswith(b"Fetch completed"):
        whole += await c.line()
    assert "Grüße aus Köln".encode() in whole
    out = await c.cmd(b'm STATUS "B\xc3\xbccher/\xc3\x84rger" (MESSAGES)\r\n', b"m")
    assert out[0] == '* STATUS "Bücher/Ärger" (MESSAGES 1)\r\n'.encode()
    # another session that did not enable it still sees modified UTF-7
    d = await Raw.connect(city.ports["imaps"], client_tls())
    await d.cmd(b"a LOGIN zhang.san \"" + PASSWORD.encode() + b"\"\r\n", b"a")
    out = await d.cmd(b"b LIST \"\" \"B*\"\r\n", b"b")
    assert out[0] == b'* LIST (\\HasChildren) "/" "B&APw-cher"\r\n'
    d.w.close()
    c.w.close()


async def test_create_special_use(city: Any) -> None:
    """RFC 6154 §3 CREATE-SPECIAL-USE with imaplib."""

    def run() -> None:
        m = logged_in(city)
        assert "CREATE-SPECIAL-USE" in m.capabilities
        typ, _ = m._simple_command("CREATE", "Wichtig", "(USE (\\Flagged))")
        assert typ == "OK"
        typ, data = m.list('""', "Wichtig")
        assert typ == "OK" and b"\\Flagged" in data[0], data
        typ, data = m._simple_command("CREATE", "Odd", "(USE (\\Bogus))")
        assert typ == "NO" and b"USEATTR" in data[-1], data
        assert m.list('""', "Odd")[1] == [None]  # nothing was created
        m.logout()

    await th(run)


async def test_big_append_is_spooled_parsed_off_loop_and_stored_whole(city: Any) -> None:
    body = b"Subject: big one\nX-Bare-LF: yes\n\n" + b"line of text\n" * 120_000  # 1.6 MB

    def run() -> None:
        m = logged_in(city)
        typ, data = m.append("Drafts", None, None, body)
        assert typ == "OK" and b"APPENDUID" in data[0]
        m.select("Drafts")
        typ, data = m.fetch("1", "(RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK"
        # stored with CRLF line ends (imaplib sends CRLF; the size is exact)
        assert b"RFC822.SIZE %d" % (len(body) + body.count(b"\n")) in data[0][0]
        assert data[0][1].startswith(b"Subject: big one")
        m.logout()

    await th(run)
