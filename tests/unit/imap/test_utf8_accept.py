"""UTF8=ACCEPT (RFC 6855) in the core: UTF-8 mailbox names, the APPEND UTF8 data item,
charset rules after ENABLE, and UTF-8 names in replies only for that session."""

from __future__ import annotations

import contextvars

from mailrelay.imap.proto import Append, Create
from mailrelay.imap.proto.response import UTF8_NAMES, mailbox_name

from .conftest import Link


def authed(utf8: bool) -> Link:
    link = Link()
    link.login()
    link.core.utf8_accept = utf8
    return link


def test_mailbox_names_utf8_only_after_enable() -> None:
    cmd = authed(True).command('c CREATE "Bücher/&-x"'.encode())
    assert isinstance(cmd, Create) and cmd.mailbox == "Bücher/&-x"  # no mUTF-7 decoding
    assert authed(False).command(b'c CREATE "B&APw-cher"').mailbox == "Bücher"
    link = authed(False)
    link.send('c CREATE "Bücher"\r\n'.encode())
    assert link.out().startswith(b"c BAD")
    link = authed(True)
    link.send(b'c CREATE "\xff"\r\n')
    assert link.out().startswith(b"c BAD")


def test_append_utf8_data_item() -> None:
    link = authed(True)
    (ev,) = link.send(b"a APPEND INBOX (\\Seen) UTF8 (~{5+}\r\nhallo)\r\n")
    assert isinstance(ev.command, Append) and ev.command.message == b"hallo"
    assert ev.command.binary and ev.command.flags == ("\\Seen",)
    link3 = authed(True)
    link3.send(b"a APPEND INBOX UTF8 ({5+}\r\nhallo)\r\n")  # must be literal8
    assert link3.out().startswith(b"a BAD")


def test_charset_rules_after_enable() -> None:
    for line, ok in (
        (b"s SEARCH CHARSET UTF-8 ALL", False),
        (b"s SEARCH ALL", True),
        (b"s SORT (DATE) UTF-8 ALL", True),
        (b"s SORT (DATE) US-ASCII ALL", False),
        (b"s THREAD REFERENCES ISO-8859-1 ALL", False),
    ):
        link = Link()
        link.select()
        link.core.utf8_accept = True
        evs = link.send(line + b"\r\n")
        out = link.out()
        assert (type(evs[0]).__name__ == "CommandReceived") == ok, (line, out)
        if not ok:
            assert out.startswith(b"s BAD")


def test_reply_names_follow_the_session_context() -> None:
    assert mailbox_name("Bücher") == b'"B&APw-cher"'

    def enabled() -> bytes:
        UTF8_NAMES.set(True)
        return mailbox_name('Bü"cher')

    assert contextvars.copy_context().run(enabled) == 'Bü\\"cher'.join(['"', '"']).encode()
    assert mailbox_name("Bücher") == b'"B&APw-cher"'  # other contexts unaffected
