"""Official documents, nothing twice and fail closed under faults (issue #13 follow-up).

* a crash between storing the verified copy and recording its verdict: the retry
  delivers exactly one copy (copy and verdict commit together); for a document to our
  own units, verified and delivered while it is sent, the send fails and leaves nothing;
* a crash after both committed but before the queue row was finished: the retry finds
  the unit delivered and delivers nothing again;
* a queue lease taken over by another node while the document is being examined: this
  node changes nothing (WARNING), the new owner delivers it once;
* the same for signed mail that is not a document (``document_copies``) and for a
  document a clerk sends by mail (one document per submitted message), and for a
  clerk's read receipt (one sealed receipt, one copy of it to the sending clerks);
* the `certificates_changed` LISTEN comes back by itself, and its catch-up re-examines:
  a key-compromise revocation notified while nobody listened still reaches the document.

A fault is injected at a named point of the handler (``DocumentService.fault``): raising
there rolls back the open transaction exactly as a killed process's does, and the queue
row is tried again, as after a crash.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

import aiosmtplib
import pytest

from mailrelay.documents.docmime import Attachment
from mailrelay.documents.mimeparts import header, text_header
from mailrelay.documents.seal import assemble_signed, sign_detached
from tests.integration.mailutil import PASSWORD, client_tls, inbox
from tests.integration.test_documents_helpers import (
    CA_PASSPHRASE,
    inject,
    seal_city,
    wait_for,
    wait_states,
    without_trace,
)

TITLE = "关于开展安全生产大检查的通知"
NUMBER = "楚财发〔2026〕9号"
FILES = [Attachment("附件.txt", "检查要点……\n".encode() * 50, "text/plain")]
CLERKS = ("wang.wu@cx.example", "zhao.liu@cx.example")


@pytest.fixture
def cfg_overrides():
    return {"ca": {"passphrase": CA_PASSPHRASE}, "smtp": {"trusted_networks": ["127.0.0.0/8"]},
            # a failed attempt is tried again after 1 s; a dead owner's rows come back soon
            "queue": {"retry_initial": 1, "retry_max": 2},
            "node": {"heartbeat_seconds": 0.5, "dead_seconds": 2.0}}


@pytest.fixture
async def docs(server):
    return await seal_city(server)


class Crash(ConnectionResetError):
    """What the handler sees when its process (or its database session) dies."""


def crash_once_at(point: str | tuple[str, ...], seen: list[str]) -> Any:
    """A fault that strikes once at each of the named points."""
    points = (point,) if isinstance(point, str) else point

    async def fault(at: str) -> None:
        if at in points and at not in seen:
            seen.append(at)
            raise Crash(f"injected crash at {at}")
    return fault


async def docs_queue_empty(server: Any) -> bool:
    async with server.services.db.pool.acquire() as conn:
        return bool(await conn.fetchval(
            "select count(*) = 0 from queue where transport = 'docs'"))


async def settled(server: Any, docs: Any, ident: int) -> dict[str, Any]:
    """Delivered everywhere and nothing left to retry: no later copy can arrive."""
    states = await wait_states(docs, ident, {"delivered"}, timeout=30)
    assert await wait_for(lambda: docs_queue_empty(server), 30)
    return states


@pytest.mark.parametrize("point", ["copy-stored", "recorded"])
async def test_crash_around_the_verdict_delivers_one_copy(server, docs, point):
    docs.deliver_inline = False  # through the queue to the docs handler, as an arrival
    seen: list[str] = []
    docs.fault = crash_once_at(point, seen)
    sent = await docs.send(from_unit="finance", to=["stats"], title=TITLE, number=NUMBER,
                           attachments=FILES)
    states = await settled(server, docs, sent.id)
    assert seen == [point]  # the fault did strike, and the document was tried again
    assert states["stats"]["verdict"] == "trusted" and states["stats"]["clerks"] == 2
    for clerk in CLERKS:
        msgs = await inbox(server, clerk)
        assert len(msgs) == 1, f"{clerk} got {len(msgs)} copies after a crash at {point}"
        assert without_trace(msgs[0]).startswith(b"X-CX-Seal-Verdict: trusted; doc=%d;"
                                                 % sent.id)
    # one delivery recorded for the queue row, and the copy is the one the verdict names
    raw = await docs.raw(str(sent.id), "stats")
    assert raw == (await inbox(server, CLERKS[0]))[0]


async def test_crash_while_sending_inline_leaves_nothing(server, docs):
    """A document to our own units is verified and delivered in its sending
    transaction: a crash between storing the clerks' copy and recording the verdicts
    leaves no document, no copy and no queue row, and the caller gets the error (never
    an id); sent again, it reaches each clerk once."""
    seen: list[str] = []
    docs.fault = crash_once_at("copy-stored", seen)
    with pytest.raises(Crash):
        await docs.send(from_unit="finance", to=["stats"], title=TITLE, number=NUMBER,
                        attachments=FILES)
    assert seen == ["copy-stored"]
    assert await docs.list() == []
    for clerk in CLERKS:
        assert await inbox(server, clerk) == []
    assert await docs_queue_empty(server)
    sent = await docs.send(from_unit="finance", to=["stats"], title=TITLE, number=NUMBER,
                           attachments=FILES)
    states = await _states(docs, sent.id)  # delivered when send returns: no wait
    assert states["stats"]["state"] == "delivered" and states["stats"]["clerks"] == 2
    for clerk in CLERKS:
        msgs = await inbox(server, clerk)
        assert len(msgs) == 1
        assert without_trace(msgs[0]).startswith(b"X-CX-Seal-Verdict: trusted; doc=%d;"
                                                 % sent.id)
    assert await docs.raw(str(sent.id), "stats") == (await inbox(server, CLERKS[0]))[0]


async def test_lease_lost_while_examining_changes_nothing(server, docs, caplog):
    """Another node took the row over (our lease was reaped) while we verified: we must
    neither deliver nor record; the row's new owner (here: this node again, once the
    reaper hands back the row of the vanished owner) delivers it exactly once."""
    seen: list[str] = []
    snapshot: dict[str, Any] = {}
    pool = server.services.db.pool

    async def fault(at: str) -> None:
        if at == "verified" and not seen:
            seen.append(at)
            async with pool.acquire() as conn:
                await conn.execute("update queue set lease_owner = 'node-that-took-over'"
                                   " where transport = 'docs' and state = 'active'")
        elif at == "recorded" and seen and not snapshot:
            # the first attempt is over: what did it change?
            snapshot["copies"] = [len(await inbox(server, c)) for c in CLERKS]
            snapshot["states"] = {u: r["state"] for u, r in
                                  (await _states(docs, sent_id[0])).items()}

    sent_id: list[int] = []
    docs.deliver_inline = False  # through the queue to the docs handler, as an arrival
    docs.fault = fault
    with caplog.at_level(logging.WARNING, logger="cxgw.docs"):
        sent = await docs.send(from_unit="finance", to=["stats"], title=TITLE, number=NUMBER,
                               attachments=FILES)
        sent_id.append(sent.id)
        await settled(server, docs, sent.id)
    assert snapshot == {"copies": [0, 0], "states": {"stats": "queued"}}
    assert any("lease lost" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records if r.name == "cxgw.docs")
    for clerk in CLERKS:
        assert len(await inbox(server, clerk)) == 1


async def _states(docs: Any, ident: int) -> dict[str, dict[str, Any]]:
    st = await docs.status(str(ident))
    return {r["unit"]: r for r in st["recipients"]}


async def test_signed_mail_crash_after_copy_delivers_once(server, docs):
    """Validly sealed mail that is not a document: no recipient row records its copy, the
    `document_copies` row does, in the copy's transaction."""
    seen: list[str] = []
    docs.fault = crash_once_at("copy-stored", seen)
    signer = await docs.signer("finance")
    entity = (b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
              b"Please send the quarterly figures by Friday.\r\n")
    outer = [header("From", "<finance.docs@cx.example>"),
             header("To", "<stats.docs@cx.example>"), text_header("Subject", "figures"),
             header("Message-ID", "<once-signed-mail@cx.example>")]
    await inject(server, assemble_signed(outer, entity, sign_detached(entity, signer)))
    assert await wait_for(lambda: docs_queue_empty(server), 30)
    assert seen == ["copy-stored"]
    for clerk in CLERKS:
        msgs = await inbox(server, clerk)
        assert len(msgs) == 1, f"{clerk} got {len(msgs)} copies"
        assert b"not-a-document" in msgs[0].replace(b"\r\n ", b" ")


async def test_certificates_listen_reconnects_and_catches_up(server, docs):
    """A revocation for key compromise whose NOTIFY nobody heard (the LISTEN session was
    gone) is applied by the catch-up after the listener reconnects."""
    sent = await docs.send(from_unit="finance", to=["stats"], title=TITLE, number=NUMBER,
                           attachments=FILES)
    await settled(server, docs, sent.id)
    listen = server.services.listen
    [seal] = [c for c in await docs.certs.certificates(kind="seal", unit="finance")
              if c.status == "valid"]
    pool = server.services.db.pool
    async with pool.acquire() as conn:
        old_pid = listen.backend_pid()
        assert old_pid is not None
        async with conn.transaction():
            # Revoke with the NOTIFY trigger off: as if it came while nobody listened.
            await conn.execute("set local session_replication_role = replica")
            await conn.execute("update certificates set status = 'revoked', revoked_at = now(),"
                               " reason = 1 where serial = $1", seal.serial)
        assert await conn.fetchval("select pg_terminate_backend($1)", old_pid)

    async def revoked() -> bool:
        st = await _states(docs, sent.id)
        return st["stats"]["state"] == "revoked-after-delivery"

    assert await wait_for(revoked, 20)
    assert listen.backend_pid() not in (None, old_pid)


async def test_clerk_mail_submission_crash_after_send_seals_once(server, docs):
    """The clerk's message is turned into ONE document even when the process dies after
    the sealed document was queued but before the clerk's queue row was finished."""
    seen: list[str] = []
    docs.fault = crash_once_at("recorded", seen)
    msg = ("From: zhang.san@cx.example\r\nTo: finance.docs@cx.example\r\n"
           "Subject: =?utf-8?b?" + base64.b64encode(TITLE.encode()).decode() + "?=\r\n"
           "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
           "Content-Transfer-Encoding: base64\r\n\r\n"
           + base64.encodebytes(f"收文单位: stats\n文号: {NUMBER}\n\n请认真贯彻执行。\n"
                                .encode()).decode().replace("\n", "\r\n")).encode()
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=server.ports["submission"],
                               start_tls=True, tls_context=client_tls()) as smtp:
        await smtp.login("zhang.san@cx.example", PASSWORD)
        await smtp.sendmail("zhang.san@cx.example", ["finance.docs@cx.example"], msg)

    async def one_sent() -> list[Any]:
        return await docs.list()

    [row] = await wait_for(one_sent, 30)
    await settled(server, docs, row["id"])
    assert seen == ["recorded"]
    assert len(await docs.list()) == 1
    for clerk in CLERKS:
        assert len(await inbox(server, clerk)) == 1


async def test_read_receipt_crashes_sign_once(server, docs):
    """A clerk's read receipt: a crash after the sealed receipt was queued (before it was
    marked sent), and one after its verified copy reached the sending clerks (before the
    document was marked signed): one receipt, one copy, the document signed once."""
    from tests.integration.test_documents_mdn import send_as, thunderbird_mdn

    sent = await docs.send(from_unit="finance", to=["stats"], title=TITLE, number=NUMBER,
                           attachments=[])
    await settled(server, docs, sent.id)
    [copy] = await inbox(server, CLERKS[0])
    original_id = next(line for line in without_trace(copy).split(b"\r\n")
                       if line.lower().startswith(b"message-id:")).split(b":", 1)[1].strip()
    seen: list[str] = []
    docs.fault = crash_once_at(("receipt-queued", "receipt-copy-stored"), seen)
    await send_as(server, CLERKS[0],
                  thunderbird_mdn(CLERKS[0], "finance.docs@cx.example", original_id.decode(),
                                  "x"), "finance.docs@cx.example")

    async def signed() -> bool:
        return (await _states(docs, sent.id))["stats"]["state"] == "signed"

    assert await wait_for(signed, 30)
    assert await wait_for(lambda: docs_queue_empty(server), 30)
    assert seen == ["receipt-queued", "receipt-copy-stored"]
    receipts = await inbox(server, "zhang.san@cx.example")
    assert len(receipts) == 1 and b"X-CX-Doc-Receipt: signed" in receipts[0]
    async with server.services.db.pool.acquire() as conn:
        queued_receipts = await conn.fetchval(
            "select count(distinct queue_id) from deliveries"
            " where recipient = 'finance.docs@cx.example' and status = 'delivered'"
            " and sender = 'stats.docs@cx.example'")
    assert queued_receipts == 1
