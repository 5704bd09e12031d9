"""Issue 18 RFC points on the real server (PostgreSQL store, imaplib over TLS)."""

from __future__ import annotations

from typing import Any

from tests.integration.mailutil import seed_city
from tests.integration.test_imap import logged_in, th


async def test_subscriptions_outlive_mailboxes_and_status_nonexistent(server: Any) -> None:
    await seed_city(server)

    def run() -> None:
        m = logged_in(server)
        typ, data = m.list('""', "*")
        assert typ == "OK" and not any(b"\\Subscribed" in x for x in data)
        typ, data = m._simple_command("LIST", "(SUBSCRIBED)", '""', "*")
        subs = m._untagged_response(typ, data, "LIST")[1]
        assert len(subs) == 6 and all(b"\\Subscribed" in x for x in subs)  # new account
        assert m.create("Projects/2024")[0] == "OK"
        typ, data = m.lsub('""', "*")
        assert not any(b"Projects" in x for x in data)  # CREATE does not subscribe
        assert m.subscribe("Projects/2024")[0] == "OK"
        typ, data = m.lsub('""', "%")  # RFC 3501 §6.3.9: the unsubscribed parent
        assert b'(\\Noselect) "/" "Projects"' in b"".join(data)
        assert m.delete("Projects/2024")[0] == "OK"
        typ, data = m._simple_command("LIST", "(SUBSCRIBED)", '""', "Projects/*")
        lines = m._untagged_response(typ, data, "LIST")[1]
        assert lines == [b'(\\NonExistent \\Subscribed) "/" "Projects/2024"']  # §6.3.6
        # RFC 5530: STATUS / SELECT of a missing mailbox is NONEXISTENT, APPEND TRYCREATE
        typ, data = m._simple_command("STATUS", "Projects/2024", "(MESSAGES)")
        assert typ == "NO" and b"[NONEXISTENT]" in data[-1]
        typ, data = m.select("Projects/2024")
        assert typ == "NO" and b"[NONEXISTENT]" in data[-1]
        typ, data = m.append("Projects/2024", None, None, b"Subject: x\r\n\r\nx\r\n")
        assert typ == "NO" and b"[TRYCREATE]" in data[-1]
        m.logout()

    await th(run)
