"""MUC end to end: the real server and PostgreSQL, slixmpp clients with xep_0045.

Unit rooms follow the directory; chat among three users with stanza ids and history;
an ad-hoc members-only room configured by form, with invitation, kick and nick conflict.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slixmpp import JID
from slixmpp.exceptions import PresenceError

from .test_xmpp import DOMAIN, PASSWORD, Client, seed

pytestmark = pytest.mark.integration

MUC = f"conference.{DOMAIN}"
FIN = JID(f"finance@{MUC}")
MUC_USER = "{http://jabber.org/protocol/muc#user}"


class MucClient(Client):
    def __init__(self, jid: str, **kw: Any) -> None:
        super().__init__(jid, **kw)
        self.register_plugin("xep_0045")
        self.register_plugin("xep_0004")
        self.register_plugin("xep_0249")
        self.groupchat: asyncio.Queue[Any] = asyncio.Queue()
        self.room_presences: asyncio.Queue[Any] = asyncio.Queue()
        self.add_event_handler("groupchat_message", self.groupchat.put_nowait)
        self.add_event_handler("groupchat_presence", self.room_presences.put_nowait)

    async def room_presence(self, room: str, ptype: str) -> Any:
        while True:
            pres = await asyncio.wait_for(self.room_presences.get(), 10)
            if pres["from"].bare == room and pres["type"] == ptype:
                return pres

    @property
    def muc(self) -> Any:
        return self.plugin["xep_0045"]

    async def said(self, timeout: float = 10) -> Any:
        while True:
            msg = await asyncio.wait_for(self.groupchat.get(), timeout)
            if msg["body"]:
                return msg


@pytest.fixture
def cfg_overrides() -> dict[str, dict[str, object]]:
    return {"auth": {"scram_iterations": 4096}}


@pytest.fixture
async def xmpp(services: Any) -> AsyncIterator[Any]:
    from gateway.app import RunningServer
    await seed(services)
    await services.directory.add_user("zhao.liu", "finance", "赵六", password=PASSWORD)
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


def muc_service(srv: Any) -> Any:
    host = srv.services.components["xmpp"].host
    return next(h.__self__ for h in host.hooks.handlers("disco/host/items")
                if type(getattr(h, "__self__", None)).__name__ == "MucService")


async def until(cond: Any, timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


async def test_unit_room_membership_follows_the_directory(xmpp: Any) -> None:
    svc = muc_service(xmpp)
    room = svc.rooms[str(FIN)]
    assert room.config.name == "财政局"
    assert room.affiliation(f"zhang.san@{DOMAIN}") == "member"
    d = xmpp.services.directory
    await d.add_user("sun.qi", "finance", "孙七", password=PASSWORD, roles=["unit-admin"])
    await until(lambda: room.affiliation(f"sun.qi@{DOMAIN}") == "admin")
    sun = await xmpp.connect("sun.qi")
    pres, _subject, _occ, _hist = await sun.muc.join_muc_wait(FIN, "孙七", timeout=10)
    codes = {int(s.get("code")) for s in pres.xml.iter(MUC_USER + "status")}
    assert {110, 100, 170} <= codes
    assert pres["muc"]["affiliation"] == "admin" and pres["muc"]["role"] == "moderator"
    # Stored in PostgreSQL, too.
    async with xmpp.services.db.pool.acquire() as conn:
        await until(lambda: svc.writer.task is None)
        aff = await conn.fetchval(
            "select affiliation from xmpp_muc_affiliation where room = $1 and jid = $2",
            str(FIN), f"sun.qi@{DOMAIN}")
    assert aff == "admin"
    # Moved to another unit: removed from the room (status 321) and refused at the door.
    wang = await xmpp.connect("wang.wu")
    with pytest.raises(PresenceError) as refused:
        await wang.muc.join_muc_wait(FIN, "王五", timeout=10)
    assert refused.value.condition == "registration-required"
    await d.move_user("sun.qi", "health")
    await until(lambda: room.affiliation(f"sun.qi@{DOMAIN}") == "none")
    left = await sun.room_presence(str(FIN), "unavailable")
    assert 321 in {int(s.get("code")) for s in left.xml.iter(MUC_USER + "status")}
    assert svc.rooms[f"health@{MUC}"].affiliation(f"sun.qi@{DOMAIN}") == "admin"


async def test_room_chat_among_three_with_history(xmpp: Any) -> None:
    zhang, li, zhao = [await xmpp.connect(u) for u in ("zhang.san", "li.si", "zhao.liu")]
    for c, nick in ((zhang, "张三"), (li, "李四"), (zhao, "赵六")):
        await c.muc.join_muc_wait(FIN, nick, maxstanzas=0, timeout=10)
    for n in range(3):
        zhang.send_message(mto=FIN, mbody=f"会议 {n}", mtype="groupchat")
    for c in (zhang, li, zhao):
        got = [await c.said() for _ in range(3)]
        assert [m["body"] for m in got] == ["会议 0", "会议 1", "会议 2"]
        assert got[0]["from"] == JID(f"{FIN}/张三")
        sid = got[0].xml.find("{urn:xmpp:sid:0}stanza-id")
        assert sid is not None and sid.get("by") == str(FIN)
    li.send_message(mto=FIN, mbody="收到", mtype="groupchat")
    assert (await zhao.said())["body"] == "收到"
    # Someone joining later gets the last two messages as history with delay stamps.
    wang = await xmpp.connect("wang.wu")
    health = JID(f"health@{MUC}")
    await wang.muc.join_muc_wait(health, "王五", timeout=10)
    other = await xmpp.connect("li.si")
    _p, _s, _o, history = await other.muc.join_muc_wait(FIN, "李四", maxstanzas=2, timeout=10)
    assert [m["body"] for m in history] == ["会议 2", "收到"]


async def test_adhoc_members_only_room(xmpp: Any) -> None:
    zhang, wang, li = [await xmpp.connect(u) for u in ("zhang.san", "wang.wu", "li.si")]
    room = JID(f"project@{MUC}")
    pres, *_ = await zhang.muc.join_muc_wait(room, "zs", timeout=10)
    codes = {int(s.get("code")) for s in pres.xml.iter(MUC_USER + "status")}
    assert {110, 201} <= codes and pres["muc"]["affiliation"] == "owner"
    form = await zhang.muc.get_room_config(room)
    fields = form.get_fields()
    assert "muc#roomconfig_membersonly" in fields
    submit = zhang.plugin["xep_0004"].make_form(ftype="submit")
    submit.add_field(var="FORM_TYPE", ftype="hidden",
                     value="http://jabber.org/protocol/muc#roomconfig")
    submit.add_field(var="muc#roomconfig_membersonly", ftype="boolean", value=True)
    submit.add_field(var="muc#roomconfig_persistentroom", ftype="boolean", value=True)
    submit.add_field(var="muc#roomconfig_roomname", value="专项工作组")
    await zhang.muc.set_room_config(room, submit)
    with pytest.raises(PresenceError) as refused:
        await wang.muc.join_muc_wait(room, "ww", timeout=10)
    assert refused.value.condition == "registration-required"
    # A mediated invitation makes wang.wu a member; he gets it as a message.
    zhang.muc.invite(room, f"wang.wu@{DOMAIN}", reason="项目讨论")
    while True:  # (slixmpp hides invites to rooms it tried to join: read the stanza)
        inv = await wang.next_message()
        if inv.xml.find(f"{MUC_USER}x/{MUC_USER}invite") is not None:
            break
    assert inv["from"] == room
    assert inv.xml.findtext(f"{MUC_USER}x/{MUC_USER}invite/{MUC_USER}reason") == "项目讨论"
    await wang.muc.join_muc_wait(room, "ww", timeout=10)
    # Nick conflict: li.si (made a member) asks for wang's nick.
    await zhang.muc.set_affiliation(room, "member", jid=JID(f"li.si@{DOMAIN}"))
    with pytest.raises(PresenceError) as conflict:
        await li.muc.join_muc_wait(room, "ww", timeout=10)
    assert conflict.value.condition == "conflict"
    # Kick: wang.wu leaves with status 307.
    await zhang.muc.set_role(room, "ww", "none", reason="离题")
    gone = await wang.room_presence(str(room), "unavailable")
    assert {110, 307} <= {int(s.get("code")) for s in gone.xml.iter(MUC_USER + "status")}
    svc = muc_service(xmpp)
    assert svc.rooms[str(room)].config.name == "专项工作组"
    # Direct invitation (XEP-0249) is routed from user to user.
    direct: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    li.add_event_handler("groupchat_direct_invite",
                         lambda m: None if direct.done() else direct.set_result(m))
    zhang.plugin["xep_0249"].send_invitation(JID(f"li.si@{DOMAIN}"), room, reason="来")
    assert (await asyncio.wait_for(direct, 10))["groupchat_invite"]["jid"] == room


async def test_server_lists_conference(xmpp: Any) -> None:
    zhang = await xmpp.connect("zhang.san")
    items = await zhang.plugin["xep_0030"].get_items(jid=DOMAIN)
    assert MUC in [i[0] for i in items["disco_items"]["items"]]
    info = await zhang.plugin["xep_0030"].get_info(jid=str(FIN))
    assert "muc_membersonly" in info["disco_info"]["features"]
