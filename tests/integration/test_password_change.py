"""Self-service password change (issue 15 item 4) against the running server: XEP-0077
from one XMPP session goes through the directory's rules (a weak password is
not-acceptable) and ends the account's other sessions on every protocol — a second XMPP
resource, an IMAP and a POP3 session — while the session that changed it stays; the
new password then works and the old one does not."""

from __future__ import annotations

import asyncio
import imaplib
import poplib
from typing import Any
from xml.etree.ElementTree import fromstring

import pytest
from slixmpp.exceptions import IqError

from tests.integration.mailutil import client_tls

from .test_xmpp import DOMAIN, PASSWORD, TIMEOUT

pytestmark = pytest.mark.integration
NEW = "Neu-Passw0rt!42"
REG = "jabber:iq:register"


@pytest.fixture
def cfg_overrides() -> dict[str, dict[str, object]]:
    return {"auth": {"scram_iterations": 4096}}


async def change(client: Any, password: str, user: str = "zhang.san") -> Any:
    iq = client.make_iq_set(ito=DOMAIN)
    iq.append(fromstring(f"<query xmlns='{REG}'><username>{user}</username>"
                         f"<password>{password}</password></query>"))
    return await iq.send(timeout=TIMEOUT)


async def until(predicate: Any) -> None:
    for _ in range(int(TIMEOUT / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_xep0077_change_ends_other_sessions_on_every_protocol(xmpp: Any) -> None:
    me = await xmpp.connect("zhang.san/phone")
    other = await xmpp.connect("zhang.san/desk")

    def sign_in() -> tuple[imaplib.IMAP4_SSL, poplib.POP3_SSL]:
        imap = imaplib.IMAP4_SSL("127.0.0.1", xmpp.ports["imaps"], ssl_context=client_tls(),
                                 timeout=TIMEOUT)
        imap.login("zhang.san", PASSWORD)
        imap.select("INBOX")
        pop = poplib.POP3_SSL("127.0.0.1", xmpp.ports["pop3s"], context=client_tls(),
                              timeout=TIMEOUT)
        pop.user("zhang.san")
        pop.pass_(PASSWORD)
        return imap, pop
    imap, pop = await asyncio.to_thread(sign_in)

    # The form (XEP-0077 §3.3) and the directory's rules.
    got = await (lambda iq: iq.send(timeout=TIMEOUT))(_get(me))
    assert got.xml.find(f"{{{REG}}}query/{{{REG}}}registered") is not None
    with pytest.raises(IqError) as weak:
        await change(me, "short")
    assert weak.value.condition == "not-acceptable"
    with pytest.raises(IqError) as someone_else:
        await change(me, NEW, user="li.si")
    assert someone_else.value.condition == "bad-request"
    assert "not-authorized" not in other.stream_errors  # nothing changed yet

    await change(me, NEW)
    await until(lambda: "not-authorized" in other.stream_errors)
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        await asyncio.to_thread(imap.noop)
    with pytest.raises((poplib.error_proto, OSError)):
        await asyncio.to_thread(pop.stat)
    # One XMPP resource, one IMAP and one POP3 session were ended by the notification.
    assert xmpp.services.components["accounts"].ended == 3
    # The session that made the change goes on.
    ping = me.make_iq_get(ito=DOMAIN)
    ping.append(fromstring("<ping xmlns='urn:xmpp:ping'/>"))
    await ping.send(timeout=TIMEOUT)
    assert not me.stream_errors

    def login(password: str) -> str:
        c = imaplib.IMAP4_SSL("127.0.0.1", xmpp.ports["imaps"], ssl_context=client_tls(),
                              timeout=TIMEOUT)
        try:
            return str(c.login("zhang.san", password)[0])
        except imaplib.IMAP4.error:
            return "NO"
        finally:
            c.shutdown()
    assert await asyncio.to_thread(login, NEW) == "OK"
    assert await asyncio.to_thread(login, PASSWORD) == "NO"


def _get(client: Any) -> Any:
    iq = client.make_iq_get(ito=DOMAIN)
    iq.append(fromstring(f"<query xmlns='{REG}'/>"))
    return iq
