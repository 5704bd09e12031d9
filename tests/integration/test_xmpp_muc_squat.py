"""MUC squatting and look-alike nicks against the running server (issue 12 item 5): a
persistent ad-hoc room made before its unit exists is closed when the unit appears (its
creator loses ownership, its history and archive go), and a Cyrillic `bоb` cannot join
beside `bob`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slixmpp import JID
from slixmpp.exceptions import PresenceError

from .test_xmpp import DOMAIN, seed
from .test_xmpp_muc import MUC, MUC_USER, MucClient, muc_service, until

pytestmark = pytest.mark.integration


@pytest.fixture
def cfg_overrides() -> dict[str, dict[str, object]]:
    return {"auth": {"scram_iterations": 4096}}


@pytest.fixture
async def xmpp(services: Any) -> AsyncIterator[Any]:
    from gateway.app import RunningServer
    await seed(services)
    srv = RunningServer(services)
    clients: list[MucClient] = []

    async def connect(local: str) -> MucClient:
        c = MucClient(f"{local}@{DOMAIN}")
        clients.append(c)
        await c.login(srv.ports["xmpp"])
        return c

    srv.connect = connect  # type: ignore[attr-defined]
    await srv.start()
    try:
        yield srv
    finally:
        for c in clients:
            await c.close()
        await srv.stop()


async def test_squatted_persistent_room_is_closed_when_the_unit_is_created(xmpp: Any) -> None:
    wang = await xmpp.connect("wang.wu")  # of health
    room = JID(f"stats@{MUC}")
    await wang.muc.join_muc_wait(room, "ww", timeout=10)
    submit = wang.plugin["xep_0004"].make_form(ftype="submit")
    submit.add_field(var="FORM_TYPE", ftype="hidden",
                     value="http://jabber.org/protocol/muc#roomconfig")
    submit.add_field(var="muc#roomconfig_persistentroom", ftype="boolean", value=True)
    submit.add_field(var="muc#roomconfig_enablelogging", ftype="boolean", value=True)
    await wang.muc.set_room_config(room, submit)
    wang.send_message(mto=room, mbody="统计局通知（伪）", mtype="groupchat")
    await wang.said()
    svc = muc_service(xmpp)
    await until(lambda: svc.writer.task is None)
    pool = xmpp.services.db.pool
    assert await pool.fetchval("select affiliation from xmpp_muc_affiliation where room = $1"
                               " and jid = $2", str(room), f"wang.wu@{DOMAIN}") == "owner"
    archived = "select count(*) from xmpp_mam where owner = $1"
    for _ in range(200):  # the archive writes behind
        if await pool.fetchval(archived, str(room)):
            break
        await asyncio.sleep(0.05)
    assert await pool.fetchval(archived, str(room)) == 1
    # The directory creates the unit "stats" with li.si in it.
    d = xmpp.services.directory
    await d.add_unit("stats", "统计局")
    await d.move_user("li.si", "stats")
    gone = await wang.room_presence(str(room), "unavailable")
    assert gone.xml.find(f"{MUC_USER}x/{MUC_USER}destroy") is not None  # XEP-0045 §10.9
    await until(lambda: svc.rooms[str(room)].affiliation(f"li.si@{DOMAIN}") == "member")
    r = svc.rooms[str(room)]
    assert r.unit == "stats" and r.affiliation(f"wang.wu@{DOMAIN}") == "none"
    await until(lambda: svc.writer.task is None)
    rows = await pool.fetch("select jid, affiliation from xmpp_muc_affiliation where room = $1",
                            str(room))
    assert {(x["jid"], x["affiliation"]) for x in rows} == {(f"li.si@{DOMAIN}", "member")}
    assert await pool.fetchval("select count(*) from xmpp_muc_history where room = $1",
                               str(room)) == 0
    for _ in range(200):  # the squatter's archived message goes too
        if not await pool.fetchval(archived, str(room)):
            break
        await asyncio.sleep(0.05)
    assert await pool.fetchval(archived, str(room)) == 0
    # The squatter cannot come back in (members only), li.si gets the clean room.
    with pytest.raises(PresenceError) as refused:
        await wang.muc.join_muc_wait(room, "ww", timeout=10)
    assert refused.value.condition == "registration-required"
    li = await xmpp.connect("li.si")
    _p, _s, _o, history = await li.muc.join_muc_wait(room, "李四", maxstanzas=20, timeout=10)
    assert not [m for m in history if m["body"]]


async def test_lookalike_nick_is_refused(xmpp: Any) -> None:
    zhang, li = await xmpp.connect("zhang.san"), await xmpp.connect("li.si")
    fin = JID(f"finance@{MUC}")
    await zhang.muc.join_muc_wait(fin, "bob", timeout=10)
    for nick in ("b\u043eb", "BOB"):  # Cyrillic о; a case variant
        with pytest.raises(PresenceError) as refused:
            await li.muc.join_muc_wait(fin, nick, timeout=10)
        assert refused.value.condition == "conflict"
    pres, *_ = await li.muc.join_muc_wait(fin, "bobby", timeout=10)
    assert pres["from"] == JID(f"{fin}/bobby")
