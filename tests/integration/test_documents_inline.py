"""Documents to our own units verified and delivered while sent (issue 17 item 4).

* documents sent at the same time are each delivered once, to every clerk, from ONE
  stored message per document (the clerks' stamped copy, also what the document row
  and each unit's verdict name), with no queue row left behind;
* when the group commit fails, every sender of the batch gets the error and nothing of
  any of them is stored (a sender never gets an id for a document not committed);
* a document that a receiving unit would not get at once (here: no active clerk) is
  not delivered while sent: it takes the queue to the docs handler as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mailrelay.documents.docmime import Attachment
from tests.integration.mailutil import inbox
from tests.integration.test_documents_helpers import (
    CA_PASSPHRASE,
    recipient_states,
    seal_city,
    wait_for,
    without_trace,
)

FILES = [Attachment("附件.txt", "统计口径说明……\n".encode() * 200, "text/plain")]
CLERKS = ("wang.wu@cx.example", "zhao.liu@cx.example", "chen.qi@cx.example")


@pytest.fixture
def cfg_overrides():
    return {"ca": {"passphrase": CA_PASSPHRASE}}


@pytest.fixture
async def docs(server):
    return await seal_city(server)


async def _count(server: Any, sql: str) -> int:
    async with server.services.db.pool.acquire() as conn:
        return int(await conn.fetchval(sql))


def _send(docs: Any, i: int, to: tuple[str, ...] = ("stats", "town-lucheng")) -> Any:
    return docs.send(from_unit="finance", to=list(to), title=f"关于报送统计数据的通知 {i}",
                     number=f"楚财发〔2026〕{30 + i}号", attachments=FILES)


async def test_concurrent_sends_each_stored_once_and_delivered_once(server, docs):
    messages_before = await _count(server, "select count(*) from messages")
    sent = await asyncio.gather(*(_send(docs, i) for i in range(6)))
    assert len({s.id for s in sent}) == 6
    async with server.services.db.pool.acquire() as conn:
        rows = await conn.fetch(
            "select d.id, d.message_id, r.unit, r.state, r.delivered_message_id, r.clerks"
            " from documents d join document_recipients r on r.document_id = d.id"
            " where d.id = any($1::bigint[])", [s.id for s in sent])
    assert len(rows) == 12
    for r in rows:  # delivered when send returned: nothing to wait for
        assert r["state"] == "delivered"
        assert r["delivered_message_id"] == r["message_id"]  # the one stored copy
        assert r["clerks"] == (2 if r["unit"] == "stats" else 1)
    # one stored message per document, nothing queued for the docs handler
    assert await _count(server, "select count(*) from messages") - messages_before == 6
    assert await _count(server, "select count(*) from queue") == 0
    copies = {r["id"]: r["message_id"] for r in rows}
    for clerk in CLERKS:
        msgs = await inbox(server, clerk)
        assert len(msgs) == 6, f"{clerk} got {len(msgs)} copies"
        ids = sorted(int(without_trace(m).split(b"doc=", 1)[1].split(b";", 1)[0])
                     for m in msgs)
        assert ids == sorted(copies)
    for s in sent:
        raw = await docs.raw(str(s.id), "stats")
        assert without_trace(raw).startswith(b"X-CX-Seal-Verdict: trusted; doc=%d;" % s.id)


async def test_a_failed_group_commit_stores_nothing_for_any_sender(server, docs):
    messages_before = await _count(server, "select count(*) from messages")

    async def fault(at: str) -> None:
        if at == "copy-stored":
            raise ConnectionResetError("injected: the database session died")
    docs.fault = fault
    results = await asyncio.gather(*(_send(docs, i) for i in range(4)),
                                   return_exceptions=True)
    assert all(isinstance(r, ConnectionResetError) for r in results), results
    assert await docs.list() == []
    assert await _count(server, "select count(*) from messages") == messages_before
    for clerk in CLERKS:
        assert await inbox(server, clerk) == []
    docs.fault = None
    again = await _send(docs, 9)
    assert {u: r["state"] for u, r in (await recipient_states(docs, again.id)).items()} == {
        "stats": "delivered", "town-lucheng": "delivered"}


async def test_a_unit_without_clerk_sends_the_document_through_the_queue(server, docs):
    await server.services.directory.add_unit("archives", "市档案馆")
    await server.services.components["mail"].parts.book.reload()
    sent = await _send(docs, 1, ("stats", "archives"))
    async def stats_delivered() -> dict[str, Any] | None:
        st = await recipient_states(docs, sent.id)
        return st if st.get("stats", {}).get("state") == "delivered" else None
    states = await wait_for(stats_delivered, 30) or await recipient_states(docs, sent.id)
    # the docs handler delivered stats; archives waits in the queue for a clerk
    assert states["stats"]["state"] == "delivered"
    assert states["archives"]["state"] == "queued"
    assert await _count(server, "select count(*) from queue where transport = 'docs'"
                                " and recipient = 'archives.docs@cx.example'") == 1
    async with server.services.db.pool.acquire() as conn:
        queued, copy = await conn.fetchrow(
            "select d.message_id, r.delivered_message_id from documents d"
            " join document_recipients r on r.document_id = d.id"
            " where d.id = $1 and r.unit = 'stats'", sent.id)
    assert queued != copy  # the sealed message as queued, and the clerks' copy
    for clerk in CLERKS[:2]:
        assert len(await inbox(server, clerk)) == 1
