"""A name that is not modified UTF-7 (imaptest's "atoms" test): the syntax is right, so
SELECT answers NO, not BAD, and deselects (RFC 3501 §6.3.1, §7.1); LIST with such a
pattern is OK and matches nothing (RFC 3501 §6.3.8)."""

from __future__ import annotations

from mailrelay.imap.proto import SessionState

from .fakestore import FakeStore
from .test_session import MSG1, Client

NAME = "!#$&'+,-.0123456789:;<=>?@^_`|[}"  # "&'" starts no valid base64 run


async def test_invalid_mutf7_name_is_no_and_deselects() -> None:
    store = FakeStore()
    store.deliver("INBOX", MSG1)
    c = Client(store)
    assert "a OK" in await c.cmd("a LOGIN alice secret")
    assert "s OK" in await c.cmd("s SELECT INBOX")
    out = await c.cmd(f"b SELECT {NAME}")
    assert "b NO" in out and "b BAD" not in out
    assert c.core.state is SessionState.AUTHENTICATED and c.session.view is None
    out = await c.cmd(f'l LIST "" {NAME}%*')
    assert "l OK" in out and "* LIST" not in out
    assert "n OK" in await c.cmd("n NOOP")  # the session goes on
