"""The documents → XMPP bridge: a unit's online clerks get a chat message when a sealed
document arrives, and the sender's clerks when it is signed for."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.mailutil import PASSWORD
from tests.integration.test_documents_helpers import CA_PASSPHRASE, seal_city, wait_states
from tests.integration.test_xmpp import Client


@pytest.fixture
def cfg_overrides():
    return {"ca": {"passphrase": CA_PASSPHRASE}}


async def test_online_clerk_is_told_of_arrival_and_receipt(server):
    docs = await seal_city(server)
    clerk = await Client("wang.wu@cx.example", PASSWORD).login(server.ports["xmpp"])
    sender_clerk = await Client("zhang.san@cx.example", PASSWORD).login(server.ports["xmpp"])
    try:
        sent = await docs.send(from_unit="finance", to=["stats"], title="关于节约用电的通知",
                               number="财办〔2026〕7号", attachments=[], note="请遵照执行。")
        await wait_states(docs, sent.id, {"delivered"})
        msg = await asyncio.wait_for(clerk.messages.get(), 10)
        body = msg["body"]
        assert "关于节约用电的通知" in body and "财办〔2026〕7号" in body
        assert str(msg["from"]) == "cx.example" and msg["type"] == "chat"
        # issue #11 item 7: how a clerk signs (a read receipt), not an admin command
        assert "read receipt" in body and "cxgw" not in body
        await docs.receipt(str(sent.id), by="wang.wu@cx.example", unit="stats")
        note = await asyncio.wait_for(sender_clerk.messages.get(), 15)
        assert "签收" in note["body"] and "stats" in note["body"]
        # issue #11 item 6: a key-compromise revocation reaches the clerk over XMPP too
        serial = f"{(await docs.signer('finance')).certificate.serial_number:x}"
        await docs.certs.revoke(serial, "key-compromise")  # the server re-examines
        revoked = await asyncio.wait_for(clerk.messages.get(), 15)
        assert "revoked for key compromise" in revoked["body"]
    finally:
        for c in (clerk, sender_clerk):
            c.disconnect()
