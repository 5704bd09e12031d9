"""XMPP across two nodes on one PostgreSQL (issue 14).

Two `RunningServer`s in this process share one database, each with its own node identity,
database pool and LISTEN connection; slixmpp clients log in to either. Shown: chat and
presence both ways, a resource conflict across nodes (the new session wins, the old one
gets `<conflict/>`), rooms homed on either node that outlive their home's crash with
their occupants, and a node that dies mid-conversation (no goodbye: its rows stay
until the survivor's reaper sees its heartbeat stop): messages sent to its users in the
meantime are delivered once when they log in again, none lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.integration.mamutil import room_archive
from tests.integration.test_xmpp import DOMAIN, Client, seed

pytestmark = pytest.mark.integration


@pytest.fixture
def cfg_overrides() -> dict[str, dict[str, object]]:
    return {"auth": {"scram_iterations": 4096},
            "node": {"heartbeat_seconds": 0.2, "dead_seconds": 1.5}}


class Nodes:
    def __init__(self) -> None:
        self.servers: list[Any] = []
        self.clients: list[Client] = []

    async def connect(self, i: int, user: str) -> Client:
        local, _, resource = user.partition("/")
        c = Client(f"{local}@{DOMAIN}/{resource}")
        self.clients.append(c)
        return await c.login(self.servers[i].ports["xmpp"])

    def router(self, i: int) -> Any:
        return self.servers[i].services.components["xmpp"].host.router


async def until(cond: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Wait for a condition another node makes true (a bound on the wait, not a timing)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def nodes(services: Any, cfg: Any) -> AsyncIterator[Nodes]:
    from gateway.app import RunningServer, open_services
    await seed(services)
    other = await open_services(cfg)
    n = Nodes()
    n.servers = [RunningServer(services), RunningServer(other)]
    assert services.node.id != other.node.id
    try:
        for srv in n.servers:
            await srv.start()
        yield n
    finally:
        for c in n.clients:
            await c.close()
        for srv in n.servers:
            with contextlib.suppress(Exception):
                await srv.stop()
        await other.db.close()


def remote(router: Any, full: str) -> Any:
    s = router.session(full)
    return s if s is not None and not s.local else None


async def test_chat_and_presence_both_ways(nodes: Nodes) -> None:
    zhang = await nodes.connect(0, "zhang.san/desk")
    await until(lambda: (r := remote(nodes.router(1), f"zhang.san@{DOMAIN}/desk"))
                is not None and r.available, "node B sees zhang.san available")
    li = await nodes.connect(1, "li.si/phone")
    # presence both ways: zhang (A) hears li's initial presence from B, li (B) gets
    # zhang's current presence from the registry's copy
    assert (await zhang.presence_from(f"li.si@{DOMAIN}"))["from"].full == \
        f"li.si@{DOMAIN}/phone"
    assert (await li.presence_from(f"zhang.san@{DOMAIN}"))["from"].full == \
        f"zhang.san@{DOMAIN}/desk"
    await until(lambda: (r := remote(nodes.router(0), f"li.si@{DOMAIN}/phone")) is not None
                and r.available, "node A sees li.si available")
    for i in range(3):
        zhang.send_message(mto=f"li.si@{DOMAIN}", mbody=f"A→B {i}", mtype="chat")
    for i in range(3):  # in order, each once
        assert (await li.next_message())["body"] == f"A→B {i}"
    li.send_message(mto=f"zhang.san@{DOMAIN}/desk", mbody="B→A", mtype="chat")
    msg = await zhang.next_message()
    assert msg["body"] == "B→A" and msg["from"].full == f"li.si@{DOMAIN}/phone"
    # a message larger than a NOTIFY payload travels as a hand-off row
    big = "长" * 5000
    zhang.send_message(mto=f"li.si@{DOMAIN}", mbody=big, mtype="chat")
    assert (await li.next_message())["body"] == big
    # li leaves B: zhang on A learns it
    await li.close()
    await zhang.presence_from(f"li.si@{DOMAIN}", "unavailable")


async def test_resource_conflict_across_nodes(nodes: Nodes) -> None:
    old = await nodes.connect(0, "zhang.san/desk")
    await until(lambda: remote(nodes.router(1), f"zhang.san@{DOMAIN}/desk") is not None,
                "node B sees zhang.san/desk")
    new = await nodes.connect(1, "zhang.san/desk")
    await until(lambda: "conflict" in old.stream_errors, "the old session got <conflict/>")
    await until(lambda: (r := nodes.router(0).session(f"zhang.san@{DOMAIN}/desk"))
                is not None and not r.local, "node A routes zhang.san/desk to node B")
    li = await nodes.connect(0, "li.si/pc")
    li.send_message(mto=f"zhang.san@{DOMAIN}/desk", mbody="to the new one", mtype="chat")
    assert (await new.next_message())["body"] == "to the new one"
    assert new.stream_errors == []


async def crash(srv: Any) -> None:
    """The node stops like a killed process: no heartbeat, no LISTEN, no goodbye rows;
    its clients lose their TCP connections."""
    from tests.integration.test_xmpp_muc import muc_service
    s = srv.services
    x = s.components["xmpp"]
    muc_service(srv).writer.store = _DeadStore()  # a killed node writes nothing more
    x.cluster.router.remote = None  # nothing more reaches the database from this node
    for task in x.cluster._tasks:
        task.cancel()
    if s.node._task is not None:
        s.node._task.cancel()
    s.node.reapers.clear()
    await s.listen.stop()
    for server in x.c2s._servers:
        server.close()
    for conn in list(x.c2s.connections):
        if conn.transport is not None:
            conn.transport.abort()
    x.cluster = None  # its stop() would delete the rows a crash leaves behind
    s.node.stop = _noop  # type: ignore[method-assign]


async def _noop() -> None:
    return None


async def test_node_dies_mid_conversation(nodes: Nodes, services: Any) -> None:
    zhang = await nodes.connect(0, "zhang.san/desk")
    li = await nodes.connect(1, "li.si/phone")
    await until(lambda: (r := remote(nodes.router(0), f"li.si@{DOMAIN}/phone")) is not None
                and r.available, "node A sees li.si available")
    zhang.send_message(mto=f"li.si@{DOMAIN}", mbody="before", mtype="chat")
    assert (await li.next_message())["body"] == "before"

    async def pending() -> int:
        async with services.db.pool.acquire() as conn:
            return int(await conn.fetchval("select count(*) from xmpp_handoff"))
    # B confirms a delivered message by deleting its row (a node killed between delivery
    # and that commit hands the message out again later: at least once, never lost)
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while await pending():
        assert loop.time() < end, "node B never confirmed its delivery"
        await asyncio.sleep(0.02)
    await crash(nodes.servers[1])
    # node A still believes li.si is on B: these go to B's channel and hand-off rows
    for i in range(3):
        zhang.send_message(mto=f"li.si@{DOMAIN}", mbody=f"while dead {i}", mtype="chat")
    # the survivor sees B's heartbeat stop, removes its sessions (li.si goes unavailable
    # for zhang) and places the handed-over messages in offline storage
    await zhang.presence_from(f"li.si@{DOMAIN}", "unavailable")
    end = loop.time() + 10
    while await pending():
        assert loop.time() < end, "hand-offs to the dead node were never taken over"
        await asyncio.sleep(0.05)
    li2 = await nodes.connect(0, "li.si/laptop")
    got = [(await li2.next_message())["body"] for _ in range(3)]
    assert got == [f"while dead {i}" for i in range(3)]
    # exactly once: nothing left in offline storage, and a later message comes next
    async with services.db.pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from xmpp_offline") == 0
    zhang.send_message(mto=f"li.si@{DOMAIN}", mbody="after", mtype="chat")
    assert (await li2.next_message())["body"] == "after"


PLAZA = f"plaza@conference.{DOMAIN}"


class _DeadStore:
    """What a killed node's MUC writes: nothing."""

    def __getattr__(self, name: str) -> Any:
        async def refuse(*_a: Any, **_k: Any) -> None:
            raise ConnectionError("the node is dead")
        return refuse




async def said_in(client: Any, probes: dict[str, str],
                  want: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Groupchat bodies per room until each room's probe came (or, with `want`, until
    each room's wanted bodies all came)."""
    got: dict[str, list[str]] = {r: [] for r in probes}

    def done(r: str) -> bool:
        if want is not None:
            return set(want[r]) <= set(got[r])
        return probes[r] in got[r]
    while not all(done(r) for r in probes):
        msg = await client.said()
        got.setdefault(msg["from"].bare, []).append(msg["body"])
    return got


async def test_rooms_homed_on_two_nodes_survive_a_home_crash(nodes: Nodes,
                                                            services: Any) -> None:
    """Two rooms, one homed on each node (where its first occupant joined), members on
    both nodes; everyone sees every message once; one archive per room. The home of one
    room is killed: its members on the survivor stay in the room (no rejoin) and get new
    messages, the dead node's occupant leaves with unavailable presence, the archive
    holds each message once."""
    from tests.integration.test_xmpp_muc import FIN, MucClient
    fin = str(FIN)
    a, b = (s.services.components["xmpp"].cluster for s in nodes.servers)
    a_id, b_id = a.node_id, b.node_id

    async def client(i: int, user: str) -> Any:
        c = MucClient(f"{user.partition('/')[0]}@{DOMAIN}/{user.partition('/')[2]}")
        nodes.clients.append(c)
        return await c.login(nodes.servers[i].ports["xmpp"])
    zhang = await client(0, "zhang.san/desk")
    wang = await client(0, "wang.wu/pc")
    li = await client(1, "li.si/phone")
    # the finance room: first joined on A, so A is its home; li.si joins from B
    await zhang.muc.join_muc_wait(FIN, "张三", maxstanzas=0, timeout=10)
    assert a.room_homes[fin] == a_id
    await until(lambda: b.room_homes.get(fin) == a_id, "node B learns the room's home")
    await li.muc.join_muc_wait(FIN, "李四", maxstanzas=0, timeout=10)
    # a room created on B (instant, temporary): B is its home; two members join from A
    await li.muc.join_muc_wait(PLAZA, "李四", maxstanzas=0, timeout=10)
    form = li.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden",
                   value="http://jabber.org/protocol/muc#roomconfig")
    await li.muc.set_room_config(PLAZA, form)
    assert b.room_homes[PLAZA] == b_id
    await until(lambda: a.room_homes.get(PLAZA) == b_id, "node A learns the room's home")
    await zhang.muc.join_muc_wait(PLAZA, "张三", maxstanzas=0, timeout=10)
    await wang.muc.join_muc_wait(PLAZA, "王五", maxstanzas=0, timeout=10)

    async def occupants() -> set[tuple[str, str, str, str]]:
        async with services.db.pool.acquire() as conn:
            return {(r["room"], r["full_jid"], r["nick"], r["node_id"]) for r in
                    await conn.fetch("select * from xmpp_muc_occupant")}
    want = {(fin, f"zhang.san@{DOMAIN}/desk", "张三", a_id),
            (fin, f"li.si@{DOMAIN}/phone", "李四", b_id),
            (PLAZA, f"li.si@{DOMAIN}/phone", "李四", b_id),
            (PLAZA, f"zhang.san@{DOMAIN}/desk", "张三", a_id),
            (PLAZA, f"wang.wu@{DOMAIN}/pc", "王五", a_id)}
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while (got := await occupants()) != want:  # written behind by each room's home
        assert loop.time() < end, f"occupancy in PostgreSQL: {got}"
        await asyncio.sleep(0.05)

    # every member says something in every room it is in; once everyone has them all,
    # one probe per room: nothing may come before it (no copy of an earlier message)
    said = [(zhang, fin, "f zhang"), (li, fin, "f li"), (li, PLAZA, "p li"),
            (zhang, PLAZA, "p zhang"), (wang, PLAZA, "p wang")]
    for c, room, body in said:
        c.send_message(mto=room, mbody=body, mtype="groupchat")
    fin_said = ["f zhang", "f li"]
    plaza_said = ["p li", "p zhang", "p wang"]
    members = {zhang: (fin, PLAZA), li: (fin, PLAZA), wang: (PLAZA,)}
    for c, rooms in members.items():
        got = await said_in(c, {r: "" for r in rooms}, {fin: fin_said, PLAZA: plaza_said})
        assert {r: sorted(v) for r, v in got.items()} == \
            {r: sorted(fin_said if r == fin else plaza_said) for r in rooms}
    zhang.send_message(mto=fin, mbody="f end", mtype="groupchat")
    wang.send_message(mto=PLAZA, mbody="p end", mtype="groupchat")
    for c, rooms in members.items():
        got = await said_in(c, {r: "f end" if r == fin else "p end" for r in rooms})
        assert got == {r: ["f end" if r == fin else "p end"] for r in rooms}
    fin_said.append("f end")
    plaza_said.append("p end")
    # one archive per room, each message once: the finance room's read from B (the
    # query goes to its home, A), the plaza's from A (its home is B)
    end = loop.time() + 10
    while sorted(await room_archive(li, fin)) != sorted(fin_said):
        assert loop.time() < end, "the finance archive never held its messages"
        await asyncio.sleep(0.1)
    while sorted(plaza := await room_archive(zhang, PLAZA)) != sorted(plaza_said):
        assert loop.time() < end, f"the plaza archive holds {plaza}"
        await asyncio.sleep(0.1)

    # B, the plaza's home, is killed
    await crash(nodes.servers[1])
    # said before node A knows that B is dead: handed to B (a row B never deletes), so
    # A's reaper runs it in the room once A took the room over
    wang.send_message(mto=PLAZA, mbody="p during", mtype="groupchat")
    await until(lambda: a.room_homes.get(PLAZA) == a_id, "node A took the plaza over")
    # the dead node's occupant leaves both rooms with unavailable presence
    for c in (zhang, wang):
        left: set[str] = set()
        rooms = {fin, PLAZA} if c is zhang else {PLAZA}
        while left != rooms:
            pres = await asyncio.wait_for(c.room_presences.get(), 10)
            if pres["type"] == "unavailable":
                assert pres["from"].resource == "李四", pres
                left.add(pres["from"].bare)
    # zhang and wang stay in the plaza without rejoining: new messages reach them
    zhang.send_message(mto=PLAZA, mbody="p after", mtype="groupchat")
    wang.send_message(mto=PLAZA, mbody="p after 2", mtype="groupchat")
    for c in (zhang, wang):
        assert (await said_in(c, {PLAZA: "p after 2"}))[PLAZA] == \
            ["p during", "p after", "p after 2"]
    zhang.send_message(mto=fin, mbody="f after", mtype="groupchat")
    assert (await said_in(zhang, {fin: "f after"}))[fin] == ["f after"]
    end = loop.time() + 10
    while (got := await occupants()) != {w for w in want if w[3] == a_id}:
        assert loop.time() < end, f"occupancy after the crash: {got}"
        await asyncio.sleep(0.05)
    # the plaza's archive: B's messages and A's, each once
    plaza_said += ["p during", "p after", "p after 2"]
    while sorted(plaza := await room_archive(wang, PLAZA)) != sorted(plaza_said):
        assert loop.time() < end, f"the plaza archive holds {plaza}"
        await asyncio.sleep(0.1)


async def test_room_home_taken_over(nodes: Nodes) -> None:
    from tests.integration.test_xmpp_muc import FIN, MucClient, muc_service
    fin = str(FIN)
    a, b = (s.services.components["xmpp"].cluster for s in nodes.servers)
    zhang = MucClient(f"zhang.san@{DOMAIN}/desk")
    nodes.clients.append(zhang)
    await zhang.login(nodes.servers[0].ports["xmpp"])
    await zhang.muc.join_muc_wait(FIN, "张三", maxstanzas=0, timeout=10)
    assert a.room_homes[fin] == nodes.servers[0].services.node.id  # its first occupant's
    zhang.send_message(mto=FIN, mbody="said before the crash", mtype="groupchat")
    assert (await zhang.said())["body"] == "said before the crash"
    writer = muc_service(nodes.servers[0]).writer
    await until(lambda: writer.task is None and not writer.jobs, "history written")
    await crash(nodes.servers[0])
    b_id = nodes.servers[1].services.node.id
    # the room still has an occupant in PostgreSQL (zhang's dead session): B takes it
    # over, and zhang leaves it
    await until(lambda: b.room_homes.get(fin) == b_id, "node B took the room over")
    room = muc_service(nodes.servers[1]).rooms[fin]
    assert room.occupants == {}
    li = MucClient(f"li.si@{DOMAIN}/phone")
    nodes.clients.append(li)
    await li.login(nodes.servers[1].ports["xmpp"])
    _p, _s, _o, history = await li.muc.join_muc_wait(FIN, "李四", maxstanzas=5, timeout=10)
    assert [m["body"] for m in history] == ["said before the crash"]  # from PostgreSQL
    li.send_message(mto=FIN, mbody="the room lives on", mtype="groupchat")
    seen = [(await li.said())["body"]]
    while seen[-1] != "the room lives on":
        seen.append((await li.said())["body"])
    assert seen in (["the room lives on"], ["said before the crash", "the room lives on"])


async def test_cxgw_nodes_shows_sessions_and_room_homes(nodes: Nodes, cfg: Any, capsys: Any,
                                                       monkeypatch: Any) -> None:
    import json

    from tests.integration.test_mail_cli import cli
    from tests.integration.test_xmpp_muc import FIN, MucClient
    li = MucClient(f"li.si@{DOMAIN}/phone")
    nodes.clients.append(li)
    await li.login(nodes.servers[1].ports["xmpp"])
    await li.muc.join_muc_wait(FIN, "李四", maxstanzas=0, timeout=10)  # B: the room's home
    await until(lambda: remote(nodes.router(0), f"li.si@{DOMAIN}/phone") is not None,
                "node A sees li.si")
    code, out, err = await cli(capsys, monkeypatch, cfg, "nodes", "--json")
    assert code == 0, err
    rows = {r["id"]: r for r in json.loads(out)}
    a, b = (s.services.node.id for s in nodes.servers)
    assert rows[a]["alive"] and rows[b]["alive"]
    assert (rows[a]["sessions"], rows[b]["sessions"]) == (0, 1)
    assert (rows[a]["rooms"], rows[b]["rooms"]) == (0, 1)
    assert rows[a]["queue_leases"] == 0 and rows[b]["handoffs"] == 0


async def test_carbons_across_nodes(nodes: Nodes) -> None:
    desk = await nodes.connect(0, "zhang.san/desk")
    phone = await nodes.connect(1, "zhang.san/phone")
    await phone.plugin["xep_0280"].enable()
    await until(lambda: (r := remote(nodes.router(0), f"zhang.san@{DOMAIN}/phone"))
                is not None and r.data.get("carbons"), "node A knows the phone wants carbons")
    li = await nodes.connect(0, "li.si/pc")
    carbons: asyncio.Queue[Any] = asyncio.Queue()
    phone.add_event_handler("carbon_sent", carbons.put_nowait)
    desk.send_message(mto=f"li.si@{DOMAIN}/pc", mbody="copy me across", mtype="chat")
    assert (await li.next_message())["body"] == "copy me across"
    sent = await asyncio.wait_for(carbons.get(), 10)
    assert sent["carbon_sent"]["body"] == "copy me across"


def serve_conf(cfg: Any, tmp_path: Any) -> Any:
    """The configuration of a second node as a real `cxgw serve` process (XMPP only)."""
    from tests.integration.faultutil import LISTENERS
    listen = "\n".join(f'{k} = "{"127.0.0.1:0" if k == "xmpp" else ""}"' for k in LISTENERS)
    conf = tmp_path / "b.toml"
    conf.write_text(
        f'[server]\ndomain = "{DOMAIN}"\nstate_dir = "{tmp_path / "b-var"}"\n'
        f'[database]\nurl = "{cfg.database.url}"\npool_min = 1\npool_max = 5\n'
        f'[listen]\n{listen}\n[auth]\nscram_iterations = 4096\n'
        f'[inbound_auth]\nenabled = false\n'
        f'[node]\nheartbeat_seconds = 0.2\ndead_seconds = 1.5\n')
    return conf


async def test_node_killed_with_sigkill(services: Any, cfg: Any, tmp_path: Any) -> None:
    """Node B is a real `cxgw serve` process, killed with SIGKILL mid-conversation."""
    from gateway.app import RunningServer
    from tests.integration.faultutil import Serve
    await seed(services)
    a = RunningServer(services)
    b = Serve(serve_conf(cfg, tmp_path))
    clients: list[Client] = []

    async def connect(port: int, user: str) -> Client:
        local, _, resource = user.partition("/")
        c = Client(f"{local}@{DOMAIN}/{resource}")
        clients.append(c)
        return await c.login(port)

    async def pending() -> int:
        async with services.db.pool.acquire() as conn:
            return int(await conn.fetchval("select count(*) from xmpp_handoff"))

    await a.start()
    try:
        await asyncio.to_thread(b.start)
        router = services.components["xmpp"].host.router
        li = await connect(b.ports["xmpp"], "li.si/phone")
        zhang = await connect(a.ports["xmpp"], "zhang.san/desk")
        await until(lambda: (r := remote(router, f"li.si@{DOMAIN}/phone")) is not None
                    and r.available, "node A sees li.si on the process, available")
        zhang.send_message(mto=f"li.si@{DOMAIN}", mbody="before", mtype="chat")
        assert (await li.next_message())["body"] == "before"
        loop = asyncio.get_running_loop()
        end = loop.time() + 10
        while await pending():
            assert loop.time() < end, "node B never confirmed its delivery"
            await asyncio.sleep(0.02)
        b.kill()  # SIGKILL: no goodbye, rows left behind
        for i in range(3):
            zhang.send_message(mto=f"li.si@{DOMAIN}", mbody=f"after kill {i}", mtype="chat")
        await zhang.presence_from(f"li.si@{DOMAIN}", "unavailable")
        end = loop.time() + 10
        while await pending():
            assert loop.time() < end, "hand-offs to the killed node were never taken over"
            await asyncio.sleep(0.05)
        li2 = await connect(a.ports["xmpp"], "li.si/laptop")
        assert [(await li2.next_message())["body"] for _ in range(3)] == \
            [f"after kill {i}" for i in range(3)]
        zhang.send_message(mto=f"li.si@{DOMAIN}", mbody="next", mtype="chat")
        assert (await li2.next_message())["body"] == "next"  # nothing twice before it
    finally:
        for c in clients:
            await c.close()
        b.kill()
        await a.stop()


async def test_unacknowledged_messages_survive_their_node(nodes: Nodes, services: Any) -> None:
    """A stream-managed client on node B that has not acknowledged what B handed it:
    B dies, and the survivor places those messages again (offline), none lost."""
    sm_on = asyncio.Event()
    li = Client(f"li.si@{DOMAIN}/phone")
    li.register_plugin("xep_0198")
    li.add_event_handler("sm_enabled", lambda _e: sm_on.set())
    nodes.clients.append(li)
    await li.login(nodes.servers[1].ports["xmpp"])
    await asyncio.wait_for(sm_on.wait(), 10)
    li.plugin["xep_0198"].send_ack = lambda: None  # it reads, but never says so
    zhang = await nodes.connect(0, "zhang.san/desk")
    await until(lambda: remote(nodes.router(0), f"li.si@{DOMAIN}/phone") is not None,
                "node A sees li.si")
    for i in range(3):
        zhang.send_message(mto=f"li.si@{DOMAIN}/phone", mbody=f"unacked {i}", mtype="chat")
    assert [(await li.next_message())["body"] for _ in range(3)] == \
        [f"unacked {i}" for i in range(3)]

    async def rows() -> int:
        async with services.db.pool.acquire() as conn:
            return int(await conn.fetchval("select count(*) from xmpp_handoff"))
    assert await rows() == 3  # kept until acknowledged
    # the client never comes back to resume: after the survivor's resumption window
    # (xmpp.sm_resume_timeout; short here) the rows go to offline storage
    nodes.servers[0].services.components["xmpp"].cluster.resume_window = 0.5
    await crash(nodes.servers[1])
    await zhang.presence_from(f"li.si@{DOMAIN}", "unavailable")
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while await rows():
        assert loop.time() < end, "the dead node's hand-offs were never placed"
        await asyncio.sleep(0.05)
    laptop = await nodes.connect(0, "li.si/laptop")
    assert [(await laptop.next_message())["body"] for _ in range(3)] == \
        [f"unacked {i}" for i in range(3)]


async def test_offline_store_reaches_a_user_online_elsewhere(nodes: Nodes) -> None:
    """A node that did not know yet that li.si came online on B stored a message offline
    (the few ms before B's announcement): B hears of it and delivers it at once."""
    from xml.etree.ElementTree import Element, SubElement

    from xmpp.proto import ns
    li = await nodes.connect(1, "li.si/phone")
    await until(lambda: (r := remote(nodes.router(0), f"li.si@{DOMAIN}/phone")) is not None
                and r.available, "node A sees li.si available")
    el = Element(ns.MESSAGE, {"from": f"zhang.san@{DOMAIN}/desk", "to": f"li.si@{DOMAIN}",
                              "type": "chat", "id": "race-1"})
    SubElement(el, ns.q(ns.CLIENT, "body")).text = "stored in the race"
    cluster_a = nodes.servers[0].services.components["xmpp"].cluster
    assert await cluster_a._store_offline(el, f"li.si@{DOMAIN}")  # as in that window
    assert (await li.next_message())["body"] == "stored in the race"
    store = nodes.servers[0].services.components["xmpp"].store
    assert await store.count_offline(f"li.si@{DOMAIN}") == 0  # taken once


async def sm_client(port: int, user: str, clients: list[Client]) -> Client:
    """A slixmpp client with stream management (XEP-0198, resumable) enabled."""
    local, _, resource = user.partition("/")
    sm_on = asyncio.Event()
    c = Client(f"{local}@{DOMAIN}/{resource}")
    c.register_plugin("xep_0198")
    c.add_event_handler("sm_enabled", lambda _e: sm_on.set())
    clients.append(c)
    await c.login(port)
    await asyncio.wait_for(sm_on.wait(), 10)
    return c


async def handoff_rows(services: Any) -> tuple[int, int]:
    """(hand-off rows, of which marked with a resumption id)."""
    async with services.db.pool.acquire() as conn:
        row = await conn.fetchrow("select count(*) n, count(sm_id) m from xmpp_handoff")
    return int(row["n"]), int(row["m"])


async def wait_rows(services: Any, want: tuple[int, int], what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while (got := await handoff_rows(services)) != want:
        assert loop.time() < end, f"{what}: hand-off rows {got}, expected {want}"
        await asyncio.sleep(0.02)


def freeze_reading(c: Client) -> None:
    """The client reads nothing more: what the server writes now is in flight when the
    node dies (never handled by the client)."""
    c.transport.pause_reading()


async def resume_on(c: Client, port: int) -> list[str]:
    """The client's connection dies with its node; it reconnects to `port` and tries to
    resume (slixmpp sends <resume previd h/> with its handled count); the XEP-0198
    outcomes it saw."""
    seen: list[str] = []
    c.add_event_handler("session_resumed", lambda _e: seen.append("resumed"))
    c.add_event_handler("sm_failed", lambda _e: seen.append("failed"))
    if c.transport is not None:
        c.transport.abort()
    await asyncio.sleep(0)
    c.started.clear()
    c.connect("127.0.0.1", port)
    await until(lambda: c.started.is_set() or "resumed" in seen, "the client is back")
    return seen


async def test_resume_on_survivor_exactly_once(nodes: Nodes, services: Any) -> None:
    """XEP-0198 across a node's death (crash imitation): the client of the dead node B
    asks node A to resume; what it had handled (acknowledged or not) never comes again,
    what was in flight and what was sent while B was dead comes once, in order."""
    full = f"li.si@{DOMAIN}/phone"
    li = await sm_client(nodes.servers[1].ports["xmpp"], "li.si/phone", nodes.clients)
    zhang = await nodes.connect(0, "zhang.san/desk")
    await until(lambda: (r := remote(nodes.router(0), full)) is not None and r.available,
                "node A sees li.si available")
    ledger = nodes.router(1).session(full).sm
    cluster_b = nodes.servers[1].services.components["xmpp"].cluster
    zhang.send_message(mto=full, mbody="acked and confirmed", mtype="chat")
    assert (await li.next_message())["body"] == "acked and confirmed"
    await until(lambda: ledger.acked == ledger.sent, "li acknowledged")
    await wait_rows(services, (0, 0), "B confirmed the acknowledged message")
    # B dies between the client's acknowledgement and the delete of the row
    cluster_b._confirm_acked = lambda: None
    zhang.send_message(mto=full, mbody="acked, row left", mtype="chat")
    assert (await li.next_message())["body"] == "acked, row left"
    await until(lambda: ledger.acked == ledger.sent, "li acknowledged again")
    li.plugin["xep_0198"].send_ack = lambda: None  # handled, never acknowledged
    zhang.send_message(mto=full, mbody="handled, not acked", mtype="chat")
    assert (await li.next_message())["body"] == "handled, not acked"
    freeze_reading(li)
    for i in range(2):
        zhang.send_message(mto=full, mbody=f"in flight {i}", mtype="chat")
    await wait_rows(services, (4, 4), "B placed every message on the resumable session")
    await crash(nodes.servers[1])
    zhang.send_message(mto=full, mbody="while B is dead", mtype="chat")  # to B's channel
    await zhang.presence_from(f"li.si@{DOMAIN}", "unavailable")  # A: B is dead
    await wait_rows(services, (5, 4), "the rows wait for the client's resumption")
    seen = await resume_on(li, nodes.servers[0].ports["xmpp"])
    assert seen == ["failed"]  # a clean fallback: new session, the rest delivered
    got = [(await li.next_message())["body"] for _ in range(3)]
    assert got == ["in flight 0", "in flight 1", "while B is dead"]
    zhang.send_message(mto=full, mbody="probe", mtype="chat")
    assert (await li.next_message())["body"] == "probe"  # nothing twice before it
    await wait_rows(services, (0, 0), "every row placed")
    async with services.db.pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from xmpp_offline") == 0


async def test_resume_elsewhere_while_owner_lives(nodes: Nodes, services: Any) -> None:
    """The client loses its connection to a live node B (half-open TCP) and reaches A:
    B hears the client's count, ends the session and hands on only what the client had
    not received: it arrives once on the new session."""
    full = f"li.si@{DOMAIN}/phone"
    li = await sm_client(nodes.servers[1].ports["xmpp"], "li.si/phone", nodes.clients)
    zhang = await nodes.connect(0, "zhang.san/desk")
    await until(lambda: (r := remote(nodes.router(0), full)) is not None and r.available,
                "node A sees li.si available")
    li.plugin["xep_0198"].send_ack = lambda: None
    zhang.send_message(mto=full, mbody="handled", mtype="chat")
    assert (await li.next_message())["body"] == "handled"
    freeze_reading(li)
    zhang.send_message(mto=full, mbody="in flight", mtype="chat")
    await wait_rows(services, (2, 2), "B placed both messages")
    # B keeps the session for resumption (hibernating) when the client asks A instead
    seen = await resume_on(li, nodes.servers[0].ports["xmpp"])
    assert seen == ["failed"]
    assert (await li.next_message())["body"] == "in flight"
    zhang.send_message(mto=f"li.si@{DOMAIN}", mbody="probe", mtype="chat")
    assert (await li.next_message())["body"] == "probe"
    await until(lambda: nodes.router(1).session(full) is None or
                not nodes.router(1).session(full).local, "B ended its session")
    await wait_rows(services, (0, 0), "no hand-off left")


async def test_sm_resume_after_sigkill(services: Any, cfg: Any, tmp_path: Any) -> None:
    """Node B is a real `cxgw serve` process with a stream-managed client, killed with
    SIGKILL; the client at once asks node A to resume (B is not yet known dead): what it
    had handled never comes again, what was in flight comes once."""
    from gateway.app import RunningServer
    from tests.integration.faultutil import Serve
    await seed(services)
    a = RunningServer(services)
    b = Serve(serve_conf(cfg, tmp_path))
    clients: list[Client] = []
    full = f"li.si@{DOMAIN}/phone"
    await a.start()
    try:
        await asyncio.to_thread(b.start)
        router = services.components["xmpp"].host.router
        li = await sm_client(b.ports["xmpp"], "li.si/phone", clients)
        zhang = Client(f"zhang.san@{DOMAIN}/desk")
        clients.append(zhang)
        await zhang.login(a.ports["xmpp"])
        await until(lambda: (r := remote(router, full)) is not None and r.available,
                    "node A sees li.si on the process, available")
        zhang.send_message(mto=full, mbody="acked", mtype="chat")
        assert (await li.next_message())["body"] == "acked"
        await wait_rows(services, (0, 0), "B confirmed the acknowledged message")
        li.plugin["xep_0198"].send_ack = lambda: None
        zhang.send_message(mto=full, mbody="handled, not acked", mtype="chat")
        assert (await li.next_message())["body"] == "handled, not acked"
        freeze_reading(li)
        for i in range(2):
            zhang.send_message(mto=full, mbody=f"in flight {i}", mtype="chat")
        await wait_rows(services, (3, 3), "B marked the messages it placed")
        b.kill()  # SIGKILL: no goodbye, rows left behind
        seen = await resume_on(li, a.ports["xmpp"])
        assert seen == ["failed"]
        assert [(await li.next_message())["body"] for _ in range(2)] == \
            ["in flight 0", "in flight 1"]
        zhang.send_message(mto=full, mbody="probe", mtype="chat")
        assert (await li.next_message())["body"] == "probe"  # nothing twice before it
        await wait_rows(services, (0, 0), "every row placed")
        async with services.db.pool.acquire() as conn:
            assert await conn.fetchval("select count(*) from xmpp_offline") == 0
    finally:
        for c in clients:
            await c.close()
        b.kill()
        await a.stop()
