"""The mailbox keyword list on the real server (issue 18): two sessions over TLS, a second
store on its own pool standing for another node, and the bound.

RFC 3501 §7.2.6: FLAGS names the flags of the mailbox, and a session hears of a new
keyword with an untagged FLAGS (and PERMANENTFLAGS, §7.1) before a FETCH shows it;
§6.4.6: a keyword a client may create is announced with ``\\*``. Dovecot keeps one list
per mailbox (every keyword ever used); so do we, in PostgreSQL (migration 0022).
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.db import Database
from mailrelay.imap.pgstore import PgMailStore
from tests.integration.mailutil import PASSWORD, client_tls, seed_city
from tests.integration.test_imap import Raw

USER = "zhang.san@cx.example"
MSG = b"From: a@example.org\r\nSubject: kw\r\nMessage-ID: <kw@example.org>\r\n\r\nbody\r\n"


@pytest.fixture
def cfg_overrides() -> dict[str, dict[str, object]]:
    return {"imap": {"max_keywords": 5}}


async def session(server: Any, select: str | None = "INBOX") -> Raw:
    c = await Raw.connect(server.ports["imaps"], client_tls())
    out = await c.cmd(b'l LOGIN zhang.san "' + PASSWORD.encode() + b'"\r\n', b"l")
    assert out[-1].startswith(b"l OK"), out
    if select:
        out = await c.cmd(f"s SELECT {select}\r\n".encode(), b"s")
        assert out[-1].startswith(b"s OK"), out
    return c


async def append(c: Raw, mailbox: str = "INBOX", flags: str = "") -> list[bytes]:
    c.w.write(f"a APPEND {mailbox} ({flags}) {{{len(MSG)}+}}\r\n".encode() + MSG + b"\r\n")
    await c.w.drain()
    out = []
    while not (out and out[-1].startswith(b"a ")):
        out.append(await c.line())
    return out


def flags_line(lines: list[bytes]) -> bytes:
    found = [ln for ln in lines if ln.startswith(b"* FLAGS ")]
    assert found, lines
    return found[-1]


def permanent_line(lines: list[bytes]) -> bytes:
    found = [ln for ln in lines if b"[PERMANENTFLAGS " in ln]
    assert found, lines
    return found[-1]


async def until(c: Raw, needle: bytes) -> list[bytes]:
    """Lines pushed (IDLE) up to and including one holding ``needle``."""
    got: list[bytes] = []
    while not got or needle not in got[-1]:
        got.append(await c.line())
    return got


async def test_new_keyword_is_announced_before_any_fetch_and_persists(server: Any) -> None:
    await seed_city(server)
    a = await session(server)
    assert (await append(a))[-1].startswith(b"a OK")
    await a.cmd(b"n NOOP\r\n", b"n")
    b = await session(server)
    assert (await b.cmd(b"i IDLE\r\n", b"i"))[-1].startswith(b"+ ")

    out = await a.cmd(b"t STORE 1 +FLAGS ($Work)\r\n", b"t")
    assert out[-1].startswith(b"t OK"), out
    # A's own reply: FLAGS naming the keyword, then the FETCH that shows it
    i_flags = out.index(flags_line(out))
    i_fetch = next(i for i, ln in enumerate(out) if b"FETCH" in ln)
    assert i_flags < i_fetch and b"$Work" in out[i_flags]
    # B, idle, is told at once: FLAGS and PERMANENTFLAGS (with \*) before the FETCH
    pushed = await until(b, b"FETCH")
    assert b"$Work" in flags_line(pushed) and b"$Work" in pushed[-1]
    assert b"$Work" in permanent_line(pushed) and b"\\*" in permanent_line(pushed)
    assert (await b.cmd(b"DONE\r\n", b"i"))[-1].startswith(b"i OK")

    # keywords are case-insensitive (RFC 3501 §9): the mailbox's spelling is kept
    await a.cmd(b"t STORE 1 -FLAGS ($work)\r\n", b"t")
    out = await a.cmd(b"t STORE 1 +FLAGS ($WORK)\r\n", b"t")
    assert b"FLAGS ($Work \\Recent)" in b"".join(out) and b"$WORK" not in b"".join(out)
    out = await a.cmd(b"t STORE 1 -FLAGS ($Work)\r\n", b"t")
    assert b"FLAGS (\\Recent)" in b"".join(out)

    # no message carries it now; a later SELECT (any session) still names it
    c = await Raw.connect(server.ports["imaps"], client_tls())
    await c.cmd(b'l LOGIN zhang.san "' + PASSWORD.encode() + b'"\r\n', b"l")
    out = await c.cmd(b"s SELECT INBOX\r\n", b"s")
    assert b"$Work" in flags_line(out) and b"$Work \\*)" in permanent_line(out)
    out = await c.cmd(b"e EXAMINE INBOX\r\n", b"e")
    assert b"$Work" in flags_line(out)
    for x in (a, b, c):
        x.w.close()


async def test_keyword_set_on_another_node_reaches_an_idle_session(server: Any, cfg: Any) -> None:
    """Another process (its own pool and store) sets a keyword: the list is in
    PostgreSQL, the NOTIFY brings the change, FLAGS comes before the FETCH."""
    await seed_city(server)
    a = await session(server)
    assert (await append(a))[-1].startswith(b"a OK")
    assert (await a.cmd(b"i IDLE\r\n", b"i"))[-1].startswith(b"+ ")
    other = await Database.open(cfg, migrate_schema=False, pool_min=1, pool_max=2)
    try:
        store = PgMailStore(other.pool, max_keywords=5)
        sel = await store.select(USER, "INBOX", readonly=True)
        assert sel.keywords == ()
        await store.store_flags(sel.mailbox_id, [m.uid for m in sel.messages], "+", ["$Node2"])
        pushed = await until(a, b"FETCH")
        assert b"$Node2" in flags_line(pushed) and b"$Node2" in pushed[-1]
        assert (await a.cmd(b"DONE\r\n", b"i"))[-1].startswith(b"i OK")
        # the other node's SELECT agrees with ours
        out = await a.cmd(b"s SELECT INBOX\r\n", b"s")
        assert b"$Node2" in flags_line(out)
        assert (await store.select(USER, "INBOX", readonly=True)).keywords == ("$Node2",)
    finally:
        await other.close()
    a.w.close()


async def test_keyword_list_is_bounded_with_no_limit(server: Any) -> None:
    """imap.max_keywords = 5 here: a sixth keyword is refused (NO [LIMIT], RFC 5530),
    by STORE, APPEND and COPY alike, and nothing changes."""
    await seed_city(server)
    a = await session(server)
    assert (await append(a))[-1].startswith(b"a OK")
    out = await a.cmd(b"t STORE 1 +FLAGS ($k1 $k2 $k3 $k4 $k5)\r\n", b"t")
    assert out[-1].startswith(b"t OK"), out
    out = await a.cmd(b"t STORE 1 +FLAGS (\\Seen $k6)\r\n", b"t")
    assert out[-1].startswith(b"t NO [LIMIT]"), out
    out = await a.cmd(b"f FETCH 1 FLAGS\r\n", b"f")
    assert b"\\Seen" not in out[0] and b"$k6" not in out[0]  # all or nothing
    # a keyword already in the list, in any case, is fine
    out = await a.cmd(b"t STORE 1 FLAGS ($K1)\r\n", b"t")
    assert out[-1].startswith(b"t OK") and b"FLAGS ($k1 \\Recent)" in b"".join(out), out
    out = await append(a, flags="$k6")
    assert out[-1].startswith(b"a NO [LIMIT]"), out
    out = await append(a, flags="\\Seen $k5")
    assert out[-1].startswith(b"a OK"), out
    # too long a keyword
    long_kw = b"$" + b"x" * 200
    out = await a.cmd(b"t STORE 1 +FLAGS (" + long_kw + b")\r\n", b"t")
    assert out[-1].startswith(b"t NO [LIMIT]"), out
    # COPY of a message whose keyword the destination cannot take
    out = await a.cmd(b"c CREATE Other\r\n", b"c")
    assert out[-1].startswith(b"c OK")
    o = await session(server, "Other")
    assert (await append(o, "Other", "$other"))[-1].startswith(b"a OK")
    out = await o.cmd(b"c COPY 1 INBOX\r\n", b"c")
    assert out[-1].startswith(b"c NO [LIMIT]"), out
    out = await a.cmd(b"n NOOP\r\n", b"n")
    assert not any(b"EXISTS" in ln for ln in out)  # nothing was copied
    for x in (a, o):
        x.w.close()
