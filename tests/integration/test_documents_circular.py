"""A circular from the city government to all 93 units of the demo directory: sealed once,
verified and delivered into every clerk's INBOX."""

from __future__ import annotations

import pytest

from directory import demo
from mailrelay.documents.docmime import Attachment
from tests.integration.test_documents_helpers import CA_PASSPHRASE, wait_states


@pytest.fixture
def cfg_overrides():
    return {"ca": {"passphrase": CA_PASSPHRASE}, "auth": {"scram_iterations": 4096}}


async def test_circular_to_all_93_units(server):
    await demo.seed(server.services.directory, count=200)
    book = server.services.components["mail"].parts.book
    await book.reload()
    units = book().units
    assert len(units) == 93
    assert all(book().clerks(u) for u in units), "every unit needs a clerk"
    docs = server.services.components["docs"]
    await docs.certs.init_ca()
    await docs.certs.issue_seal("gov-office")
    arrived = []
    server.services.bus.on("document/arrived", arrived.append)
    sent = await docs.send(from_unit="gov-office", to=["all"], title="关于做好春节期间值班工作的通知",
                           number="楚政办电〔2026〕1号", urgency="extra-urgent",
                           attachments=[Attachment("值班表.txt", "值班安排\n".encode() * 10000)])
    assert len(sent.units) == 93
    states = await wait_states(server.services.components["docs"], sent.id, {"delivered"},
                               timeout=60)
    assert len(states) == 93
    assert all(r["state"] == "delivered" and r["verdict"] == "trusted" for r in states.values())
    clerks = sum(len(book().clerks(u)) for u in units)
    async with server.services.db.pool.acquire() as conn:
        delivered = await conn.fetchval(
            "select count(*) from mailbox_messages mm join mailboxes b on b.id = mm.mailbox_id"
            " join accounts a on a.id = b.account_id where 'clerk' = any(a.roles)")
        copies = await conn.fetchval("select count(distinct message_id) from mailbox_messages")
    assert delivered == clerks
    assert copies <= 10  # the stamped message is stored once per verification batch
    assert len(arrived) == 93
