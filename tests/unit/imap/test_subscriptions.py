"""Subscriptions independent of mailboxes, LSUB and LIST-EXTENDED (RFC 3501 §6.3.6,
§6.3.9; RFC 5258 §3, §4)."""

from __future__ import annotations

from mailrelay.imap.mailbox import list_responses
from mailrelay.imap.store_api import MailboxInfo

from .fakestore import FakeStore
from .test_session import Client

BOXES = [MailboxInfo("INBOX"), MailboxInfo("Foo"), MailboxInfo("Foo/Bar"), MailboxInfo("Baz")]


def lines(out) -> list[str]:
    return [r.to_bytes().decode().rstrip("\r\n") for r in out]


def test_lsub_percent_shows_noselect_parent() -> None:
    # RFC 3501 §6.3.9: "foo/bar" subscribed, "foo" not: "%" returns foo as \Noselect
    out = lines(list_responses(BOXES, "", ["%"], command="LSUB", subscriptions=["Foo/Bar"]))
    assert out == ['* LSUB (\\Noselect) "/" "Foo"']
    out = lines(list_responses(BOXES, "", ["*"], command="LSUB", subscriptions=["Foo/Bar"]))
    assert out == ['* LSUB () "/" "Foo/Bar"']


def test_list_subscribed_nonexistent_and_childinfo() -> None:
    subs = ["INBOX", "Foo/Bar", "Gone"]
    out = lines(list_responses(BOXES, "", ["*"], subscribed_only=True, subscriptions=subs))
    assert out == [
        '* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
        '* LIST (\\HasNoChildren \\Subscribed) "/" "Foo/Bar"',
        '* LIST (\\NonExistent \\Subscribed) "/" "Gone"',  # RFC 5258 §3.1
    ]
    out = lines(list_responses(BOXES, "", ["%"], subscribed_only=True, subscriptions=subs,
                               recursive_match=True))
    assert '* LIST (\\HasChildren) "/" "Foo" ("CHILDINFO" ("SUBSCRIBED"))' in out  # RFC 5258 §4
    assert not any("Foo/Bar" in x for x in out)


def test_return_subscribed_marks_only_subscribed() -> None:
    out = lines(list_responses(BOXES, "", ["*"], subscriptions=["Baz"], return_subscribed=True))
    assert '* LIST (\\HasNoChildren \\Subscribed) "/" "Baz"' in out
    assert '* LIST (\\HasChildren) "/" "Foo"' in out
    assert sum("\\Subscribed" in x for x in out) == 1


async def test_delete_keeps_subscription_and_recursivematch_alone_is_bad() -> None:
    c = Client(FakeStore())
    await c.cmd("a LOGIN alice secret")
    assert "c OK" in await c.cmd("c CREATE Projects")
    out = await c.cmd('l LIST (SUBSCRIBED) "" "*"')
    assert "Projects" not in out  # CREATE does not subscribe
    assert "s OK" in await c.cmd("s SUBSCRIBE Projects")
    assert "d OK" in await c.cmd("d DELETE Projects")
    out = await c.cmd('l LIST (SUBSCRIBED) "" "*"')
    assert '* LIST (\\NonExistent \\Subscribed) "/" "Projects"' in out  # RFC 3501 §6.3.6
    assert '* LSUB (\\Noselect) "/" "Projects"' in await c.cmd('l LSUB "" "*"')
    out = await c.cmd('r LIST "" "*" RETURN (SUBSCRIBED)')
    assert '\\Subscribed) "/" "INBOX"' in out and "Projects" not in out
    assert "r BAD" in await c.cmd('r LIST (RECURSIVEMATCH) "" "*"')  # RFC 5258 §3.1
    assert "u OK" in await c.cmd("u UNSUBSCRIBE Projects")
    assert "Projects" not in await c.cmd('l LSUB "" "*"')


async def test_list_status_only_for_listed_selectable_mailboxes() -> None:
    c = Client(FakeStore())
    await c.cmd("a LOGIN alice secret")
    await c.cmd("c CREATE Gone")
    await c.cmd("s SUBSCRIBE Gone")
    await c.cmd("d DELETE Gone")
    await c.cmd("s UNSUBSCRIBE Sent")
    out = await c.cmd('l LIST (SUBSCRIBED) "" "*" RETURN (STATUS (MESSAGES))')
    # RFC 5819 §2: STATUS for listed mailboxes, none for a \NonExistent name
    assert '* STATUS "INBOX" (MESSAGES 0)' in out and '"Gone"' in out
    assert 'STATUS "Gone"' not in out and 'STATUS "Sent"' not in out
