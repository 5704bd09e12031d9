"""Points Dovecot's imaptest found (docs/imaptest.md), each on the real server (imaplib, TLS).

- a keyword another session set is announced with FLAGS before a FETCH shows it, and a
  re-SELECT never drops a keyword the session was told of (RFC 3501 §7.2.6);
- MOVE/COPY into the selected mailbox reports the new message (RFC 3501 §7.3.1, RFC 6851);
- unknown LIST selection/RETURN options are BAD, CHILDINFO only for descendants the
  reply does not list (RFC 5258 §3, §4).
"""

from __future__ import annotations

import imaplib
from typing import Any

from tests.integration.mailutil import seed_city
from tests.integration.test_imap import logged_in, th

MSG = b"From: a@example.org\r\nSubject: kw\r\nMessage-ID: <kw@example.org>\r\n\r\nbody\r\n"


def _untagged(m: imaplib.IMAP4, typ: str) -> list[Any]:
    return list(m.untagged_responses.pop(typ, []))


async def test_keyword_from_other_session_is_announced_before_fetch(server: Any) -> None:
    await seed_city(server)

    def run() -> None:
        a, b = logged_in(server), logged_in(server)
        assert a.append("INBOX", None, None, MSG)[0] == "OK"
        assert b.select("INBOX")[0] == "OK"
        _untagged(b, "FLAGS")
        # A sets a keyword B has never heard of; B's next FETCH FLAGS shows it
        assert a.select("INBOX")[0] == "OK"
        assert a.store("1", "+FLAGS", "($Imaptest1)")[0] == "OK"
        # B's FETCH shows the keyword: a FLAGS response naming it must come first
        typ, data = b.fetch("1", "(FLAGS)")
        assert typ == "OK" and b"$Imaptest1" in b"".join(x for x in data if isinstance(x, bytes))
        flags = _untagged(b, "FLAGS")
        assert flags and b"$Imaptest1" in flags[-1]
        # the keyword leaves the message; B selects again: FLAGS still names it
        assert a.store("1", "-FLAGS", "($Imaptest1)")[0] == "OK"
        assert b.select("INBOX")[0] == "OK"
        flags = _untagged(b, "FLAGS")
        assert flags and b"$Imaptest1" in flags[-1]
        a.logout()
        b.logout()

    await th(run)


async def test_move_and_copy_into_selected_mailbox_report_exists(server: Any) -> None:
    await seed_city(server)

    def run() -> None:
        m = logged_in(server)
        assert m.append("INBOX", None, None, MSG)[0] == "OK"
        typ, data = m.select("INBOX")
        n = int(data[0] or b"0")
        _untagged(m, "EXISTS")
        typ, _ = m.copy("1", "INBOX")
        assert typ == "OK"
        assert _untagged(m, "EXISTS")[-1] == str(n + 1).encode()  # in the COPY reply
        typ, _ = m._simple_command("MOVE", "1", "INBOX")
        assert typ == "OK"
        assert _untagged(m, "EXPUNGE") == [b"1"]
        assert _untagged(m, "EXISTS")[-1] == str(n + 1).encode()  # the moved copy
        m.logout()

    await th(run)


async def test_list_extended_unknown_options_and_childinfo(server: Any) -> None:
    await seed_city(server)

    def run() -> None:
        m = logged_in(server)
        for name in ("it", "it/a", "it/b", "it/a/x"):
            assert m.create(name)[0] == "OK"
        assert m.subscribe("it/a")[0] == "OK"
        # RFC 5258 §3: unknown selection / return options are BAD
        for args in (("(NOSUCH)", '""', '""'), ('""', '""', "RETURN", "(NOSUCH)")):
            try:
                typ, _ = m._simple_command("LIST", *args)
            except imaplib.IMAP4.error as exc:
                assert "BAD" in str(exc) or "NOSUCH" in str(exc).upper()
            else:
                raise AssertionError(f"LIST {args} answered {typ}")
        # the subscribed child is outside the pattern: the parent carries CHILDINFO
        typ, data = m._simple_command("LIST", "(SUBSCRIBED RECURSIVEMATCH)", '""', "it")
        lines = m._untagged_response(typ, data, "LIST")[1]
        assert len(lines) == 1 and b"CHILDINFO" in lines[0] and lines[0].count(b'"it"') == 1
        # the patterns list the child itself: no CHILDINFO line for the parent
        typ, data = m._simple_command(
            "LIST", "(SUBSCRIBED RECURSIVEMATCH)", '""', "(it it/a)"
        )
        lines = m._untagged_response(typ, data, "LIST")[1]
        assert len(lines) == 1 and lines[0].endswith(b'"/" "it/a"'), lines
        assert b"\\Subscribed" in lines[0] and b"CHILDINFO" not in lines[0]
        m.logout()

    await th(run)


async def test_largest_legal_id_before_login(server: Any) -> None:
    """imaptest `id`: 30 pairs of 30/1024 octets (~32 KB, RFC 2971 §3.3) before login are
    answered; a longer ID is BAD [TOOBIG] and the connection goes on."""
    from tests.integration.mailutil import client_tls
    from tests.integration.test_imap import Raw

    c = await Raw.connect(server.ports["imaps"], client_tls())
    pairs = b" ".join(b'"f%029d" "%s"' % (i, b"v" * 1024) for i in range(30))
    out = await c.cmd(b"i ID (" + pairs + b")\r\n", b"i")
    assert out[-1].startswith(b"i OK") and out[0].startswith(b"* ID ("), out
    big = b" ".join(b'"f%d" "%s"' % (i, b"v" * 4000) for i in range(30))
    out = await c.cmd(b"j ID (" + big + b")\r\n", b"j")
    assert out[-1].startswith(b"j BAD [TOOBIG] ID too long"), out
    out = await c.cmd(b"k NOOP\r\n", b"k")
    assert out[-1].startswith(b"k OK"), out
    c.w.close()
