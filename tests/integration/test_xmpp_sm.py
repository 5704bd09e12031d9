# ruff: noqa: F811  (the xmpp fixture is imported from test_xmpp)
"""Stream management (XEP-0198) and CSI (XEP-0352) end to end with slixmpp.

The resume test drops the TCP connection without closing the stream, has another user
send messages meanwhile, resumes, and counts every message id exactly once: on the
resumed device, as a carbon on the user's other device, in the archive, and nowhere in
offline storage. The second test lets the session expire instead: its unacknowledged
messages go to offline storage and reach the next login exactly once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from tests.integration.test_xmpp import DOMAIN, TIMEOUT, cfg_overrides, xmpp  # noqa: F401
from xmpp.features import sm

pytestmark = pytest.mark.integration

Z, L = f"zhang.san@{DOMAIN}", f"li.si@{DOMAIN}"


def with_sm(client: Any) -> asyncio.Event:
    enabled = asyncio.Event()
    client.register_plugin("xep_0198")
    client.add_event_handler("sm_enabled", lambda _e: enabled.set())
    return enabled


async def drop(client: Any) -> None:
    """Lose the TCP connection: no </stream:stream>, no TLS close_notify."""
    gone = client.disconnected
    client.transport.abort()
    await asyncio.wait_for(gone, TIMEOUT)


def ids(msgs: list[Any]) -> Counter[str]:
    return Counter(m["id"] for m in msgs if m["body"])


async def drain(q: asyncio.Queue[Any], quiet: float = 0.5) -> list[Any]:
    out = []
    while True:
        try:
            out.append(await asyncio.wait_for(q.get(), quiet))
        except TimeoutError:
            return out


async def server_has_routed(client: Any) -> None:
    """An iq round trip after the messages: the server has routed them by now."""
    await client.plugin["xep_0199"].ping(jid=DOMAIN, timeout=5)


async def test_resume_after_dropped_connection_no_loss_no_duplicates(xmpp: Any) -> None:
    from tests.integration.test_xmpp import Client
    phone = Client(f"{Z}/phone")
    enabled = with_sm(phone)
    await phone.login(xmpp.ports["xmpp"])
    await asyncio.wait_for(enabled.wait(), TIMEOUT)
    desk = await xmpp.connect("zhang.san/desk")
    await desk.plugin["xep_0280"].enable()
    carbon_q: asyncio.Queue[Any] = asyncio.Queue()
    desk.add_event_handler("carbon_received", carbon_q.put_nowait)
    li = await xmpp.connect("li.si")
    li.send_message(mto=f"{Z}/phone", mbody="before", mtype="chat", )
    assert (await phone.next_message())["body"] == "before"
    await drain(carbon_q)

    await drop(phone)
    sent = []
    for i in range(10):
        msg = li.make_message(mto=f"{Z}/phone", mbody=f"while away {i}", mtype="chat")
        msg["id"] = f"away-{i}"
        msg.send()
        sent.append(f"away-{i}")
    await server_has_routed(li)

    resumed = asyncio.Event()
    phone.add_event_handler("session_resumed", lambda _e: resumed.set())
    phone.connect("127.0.0.1", xmpp.ports["xmpp"])
    await asyncio.wait_for(resumed.wait(), TIMEOUT)
    li.send_message(mto=f"{Z}/phone", mbody="after", mtype="chat")
    got = await drain(phone.messages, 1.0)
    counts = ids(got)
    assert all(counts[i] == 1 for i in sent), counts
    assert [m["body"] for m in got if m["body"]][-1] == "after"
    assert sum(counts.values()) == 11  # nothing else came twice
    # Carbons: the desk saw each one exactly once, as a 'received' copy.
    carbons = Counter(m["carbon_received"]["id"] for m in await drain(carbon_q)
                      if m["carbon_received"]["body"])
    assert all(carbons[i] == 1 for i in sent), carbons
    # The archive has each once; offline storage has none.
    desk.register_plugin("xep_0313")
    page = await desk.plugin["xep_0313"].retrieve(with_jid=L, rsm={"max": 50})
    archived = Counter(m["mam_result"]["forwarded"]["stanza"]["id"] for m in page["mam"]["results"])
    assert all(archived[i] == 1 for i in sent), archived
    store = xmpp.services.components["xmpp"].store
    assert await store.count_offline(Z) == 0
    await phone.close()


async def test_unresumed_session_unacked_go_offline_once(xmpp: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(sm.StreamManagement, "timeout", lambda self: 0.5)
    from tests.integration.test_xmpp import Client
    phone = Client(f"{Z}/phone")
    enabled = with_sm(phone)
    await phone.login(xmpp.ports["xmpp"])
    await asyncio.wait_for(enabled.wait(), TIMEOUT)
    li = await xmpp.connect("li.si")
    await drop(phone)
    sent = []
    for i in range(5):
        msg = li.make_message(mto=Z, mbody=f"lost? {i}", mtype="chat")
        msg["id"] = f"q-{i}"
        msg.send()
        sent.append(f"q-{i}")
    await server_has_routed(li)
    store = xmpp.services.components["xmpp"].store
    for _ in range(50):
        if await store.count_offline(Z) == 5:
            break
        await asyncio.sleep(0.1)
    assert await store.count_offline(Z) == 5
    again = await xmpp.connect("zhang.san/laptop")
    counts = ids(await drain(again.messages, 1.0))
    assert counts == Counter({i: 1 for i in sent})
    assert await store.count_offline(Z) == 0


async def test_csi_holds_presence_until_active(xmpp: Any) -> None:
    z = await xmpp.connect("zhang.san")
    li = await xmpp.connect("li.si")
    await drain(z.presences, 0.3)
    z.send_raw("<inactive xmlns='urn:xmpp:csi:0'/>")
    await server_has_routed(z)
    li.send_presence(pshow="away", pstatus="in a meeting")
    await server_has_routed(li)
    assert await drain(z.presences, 0.5) == []
    li.send_presence(pshow="dnd", pstatus="busy")  # replaces the held one
    await server_has_routed(li)
    z.send_raw("<active xmlns='urn:xmpp:csi:0'/>")
    got = [p for p in await drain(z.presences, 0.5) if p["from"].bare == L]
    assert [p["status"] for p in got] == ["busy"]
    # A message with a body is never held.
    z.send_raw("<inactive xmlns='urn:xmpp:csi:0'/>")
    await server_has_routed(z)
    li.send_message(mto=Z, mbody="urgent", mtype="chat")
    assert (await z.next_message(timeout=2))["body"] == "urgent"


async def test_client_that_never_acks_is_closed_and_nothing_is_lost(xmpp: Any,
                                                                     monkeypatch: Any) -> None:
    """XEP-0198 memory bound: past MAX_UNACKED unacknowledged stanzas the stream is closed
    (policy-violation) and what was not acknowledged goes to offline storage."""
    import ssl as _ssl

    from load.options import Target
    from load.xmppclient import LoadError, XmppClient
    from xmpp import server as c2s

    monkeypatch.setattr(c2s, "MAX_UNACKED", 3)
    ctx = _ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = _ssl.CERT_NONE
    from tests.integration.test_xmpp import PASSWORD as XPW
    mute = await XmppClient.connect(Target("127.0.0.1", xmpp.ports["xmpp"]), "cx.example",
                                    "zhang.san", XPW, ssl_ctx=ctx, resource="mute")
    mute.send_raw("<presence/><enable xmlns='urn:xmpp:sm:3'/>")  # never answers <r/>
    li = await xmpp.connect("li.si")
    for i in range(6):
        li.send_message(mto=Z, mbody=f"flood {i}", mtype="chat")
    reason = ""
    try:
        for _ in range(50):
            await asyncio.wait_for(mute.next_element(), 5)
    except LoadError as exc:
        reason = str(exc)
    assert "policy-violation" in reason or "closed" in reason
    store = xmpp.services.components["xmpp"].store
    for _ in range(50):
        if await store.count_offline(Z) == 6:
            break
        await asyncio.sleep(0.1)
    assert await store.count_offline(Z) == 6  # unacked ones kept once, later ones offline
    mute.abort()
