"""Per-node feature caches across two nodes on one PostgreSQL (issue 14 item 6).

What one node changes (a blocklist, a roster item, archive preferences) reaches the
other node's caches and sessions through the committed change notices of
``xmpp.changes``; after the other node's LISTEN connection came back, it reloads. Each
test fails when the notices are not sent or not heard.
"""

from __future__ import annotations

import asyncio
from typing import Any
from xml.etree.ElementTree import fromstring

import pytest

from tests.integration.test_xmpp import DOMAIN
from tests.integration.test_xmpp_nodes import (  # noqa: F401 - fixtures used by name
    Nodes,
    cfg_overrides,
    nodes,
    remote,
    until,
)

pytestmark = pytest.mark.integration

LI, ZHANG, WANG = (f"{u}@{DOMAIN}" for u in ("li.si", "zhang.san", "wang.wu"))


def _queue(client: Any, event: str) -> asyncio.Queue[Any]:
    q: asyncio.Queue[Any] = asyncio.Queue()
    client.add_event_handler(event, q.put_nowait)
    return q


async def test_block_on_a_refuses_at_once_on_b(nodes: Nodes) -> None:  # noqa: F811
    li_a = await nodes.connect(0, "li.si/pc")
    li_b = await nodes.connect(1, "li.si/phone")
    zhang_b = await nodes.connect(1, "zhang.san/desk")
    await until(lambda: (r := remote(nodes.router(1), f"{LI}/pc")) is not None
                and r.available, "node B sees li.si/pc available")
    pushes = _queue(li_b, "blocked")
    await li_b.plugin["xep_0191"].get_blocked()  # li's session on B asks for pushes
    await li_a.plugin["xep_0191"].block(ZHANG)  # committed on node A
    # XEP-0191 §3.3: li's session on node B hears of it: node B applied the change
    # before it pushed, so from now on node B refuses zhang's messages
    push = await asyncio.wait_for(pushes.get(), 10)
    assert ZHANG in {i["jid"] for i in push["block"]}
    for to in (LI, f"{LI}/pc", f"{LI}/phone"):
        zhang_b.send_message(mto=to, mbody="blocked?", mtype="chat")
        err = await zhang_b.next_message(body=False)
        # XEP-0191 §3.5: the blocked sender gets service-unavailable
        assert err["type"] == "error" and err["error"]["condition"] == "service-unavailable"
    with pytest.raises(TimeoutError):
        await li_b.next_message(timeout=0.3)
    with pytest.raises(TimeoutError):
        await li_a.next_message(timeout=0.3)
    # and back: unblocked on A, delivered on B
    unpushes = _queue(li_b, "unblocked")
    await li_a.plugin["xep_0191"].unblock(ZHANG)
    await asyncio.wait_for(unpushes.get(), 10)
    zhang_b.send_message(mto=f"{LI}/phone", mbody="now?", mtype="chat")
    assert (await li_b.next_message())["body"] == "now?"


async def test_roster_change_on_a_pushed_to_session_on_b(nodes: Nodes) -> None:  # noqa: F811
    zhang_a = await nodes.connect(0, "zhang.san/desk")
    zhang_b = await nodes.connect(1, "zhang.san/phone")  # asked for the roster at login
    pushes = _queue(zhang_b, "roster_update")
    mine = _queue(zhang_a, "roster_update")
    await zhang_a.update_roster(WANG, name="王五", groups=["卫生"])
    # RFC 6121 §2.1.6: every interested resource gets the push, the one on node B too
    push = await asyncio.wait_for(pushes.get(), 10)
    item = push["roster"]["items"][WANG]
    assert item["name"] == "王五" and item["groups"] == ["卫生"]
    ver = push["roster"]["ver"]
    await zhang_a.del_roster_item(WANG)
    push = await asyncio.wait_for(pushes.get(), 10)
    assert push["roster"]["items"][WANG]["subscription"] == "remove"
    assert push["roster"]["ver"] != ver
    # the session on node A got each push once (not a second copy through node B)
    for _ in range(2):
        await asyncio.wait_for(mine.get(), 10)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(mine.get(), 0.3)


async def test_listen_reconnect_reloads_blocklists(nodes: Nodes, services: Any) -> None:  # noqa: F811
    """A change whose notice node B never heard (its LISTEN connection was gone) is
    found by the catch-up after the reconnect."""
    li_a = await nodes.connect(0, "li.si/pc")
    zhang_b = await nodes.connect(1, "zhang.san/desk")
    await until(lambda: (r := remote(nodes.router(1), f"{LI}/pc")) is not None
                and r.available, "node B sees li.si/pc available")
    b = nodes.servers[1].services
    changes = b.components["xmpp"].host.changes
    async with services.db.pool.acquire() as conn:  # a block whose notice nobody hears
        await conn.execute("insert into xmpp_blocklist(owner, jid) values ($1, $2)",
                           LI, ZHANG)
        before = changes.resets
        await conn.execute("select pg_terminate_backend($1)", b.listen.backend_pid())
    await until(lambda: changes.resets > before, "node B reloaded after its reconnect")
    zhang_b.send_message(mto=f"{LI}/pc", mbody="blocked?", mtype="chat")
    err = await zhang_b.next_message(body=False)
    assert err["type"] == "error"
    with pytest.raises(TimeoutError):
        await li_a.next_message(timeout=0.3)


async def test_archive_prefs_set_on_a_apply_on_b(nodes: Nodes) -> None:  # noqa: F811
    b = nodes.servers[1].services.components["xmpp"].host
    li_a = await nodes.connect(0, "li.si/pc")
    li_b = await nodes.connect(1, "li.si/phone")

    async def prefs(client: Any, set_default: str | None = None) -> str | None:
        iq = client.make_iq_set() if set_default else client.make_iq_get()
        el = fromstring("<prefs xmlns='urn:xmpp:mam:2'/>")
        if set_default:
            el.set("default", set_default)
        iq.xml.append(el)
        got = await iq.send(timeout=10)
        return got.xml.find("{urn:xmpp:mam:2}prefs").get("default")

    assert await prefs(li_b) != "never"  # node B caches the server's default
    heard = b.changes.heard
    assert await prefs(li_a, "never") == "never"
    await until(lambda: b.changes.heard > heard, "node B heard the change")
    assert await prefs(li_b) == "never"  # XEP-0313 §7: the same prefs on every node
