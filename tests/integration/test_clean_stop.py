"""Clean stops (issue 13): SMTP sessions get 421 4.3.2 (one inside DATA first finishes its
message), and the node hands back its leases and its row."""

from __future__ import annotations

import asyncio

from tests.integration.mailutil import RawSMTP, seed_city, wait_inbox


async def test_smtp_sessions_get_421_and_data_finishes_first(server):
    await seed_city(server)
    port = server.ports["smtp"]
    idle = await RawSMTP.connect(port)
    assert (await idle.cmd("EHLO client.example")).startswith("250")
    busy = await RawSMTP.connect(port)
    assert (await busy.cmd("EHLO client.example")).startswith("250")
    assert (await busy.cmd("MAIL FROM:<a@remote.example>")).startswith("250")
    assert (await busy.cmd("RCPT TO:<zhang.san@cx.example>")).startswith("250")
    assert (await busy.cmd("DATA")).startswith("354")
    busy.w.write(b"Subject: in flight\r\n\r\nfirst half\r\n")
    await busy.w.drain()
    mail = server.services.components["mail"]
    stopping = asyncio.get_running_loop().create_task(mail.stop())
    assert (await idle.reply()).startswith("421 4.3.2")
    assert await idle.r.read() == b""  # and closed
    busy.w.write(b"second half\r\n.\r\n")
    await busy.w.drain()
    assert (await busy.reply()).startswith("250")  # the message in DATA is ours
    assert (await busy.reply()).startswith("421 4.3.2")
    await stopping
    assert len(await wait_inbox(server, "zhang.san@cx.example", 1)) == 1


async def test_stop_releases_leases_and_the_node_row(server):
    import asyncpg

    from mailrelay.queue import repo
    from mailrelay.submit import new_queue_id
    pool = server.services.db.pool
    node = server.services.node.id
    mail = server.services.components["mail"]
    await mail.parts.scheduler.stop()  # no claims of its own from here: ours is the only one
    async with pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from nodes where id = $1", node) == 1
        async with conn.transaction():
            await repo.enqueue(conn, [new_queue_id()], [repo.NewMessage(
                b"Subject: x\r\n\r\nx\r\n", None,
                [("a@cx.example", "b@y.example", None, "y.example", "remote", None, None, None)])])
        (row,) = await repo.claim(conn, node, 10, 300)  # held by this node, as in a delivery
    await server.stop()
    conn = await asyncpg.connect(server.services.db.url)
    try:
        assert await conn.fetchval("select count(*) from nodes where id = $1", node) == 0
        got = await conn.fetchrow("select state, lease_owner, attempts from queue")
        assert dict(got) == {"state": "ready", "lease_owner": None, "attempts": 0}
    finally:
        await conn.close()


async def test_node_list_shows_the_running_node(server, cfg, capsys, monkeypatch):
    import json

    from tests.integration.test_mail_cli import cli
    code, out, err = await cli(capsys, monkeypatch, cfg, "node", "list", "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["id"] == server.services.node.id and row["alive"] is True


async def test_imap_and_xmpp_sessions_are_told_at_stop(server):
    """IMAP: `* BYE` (RFC 3501 §7.1.5); XMPP: the stream ends with <system-shutdown/>
    (RFC 6120 §4.9.3.20)."""
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    r, w = await asyncio.open_connection("127.0.0.1", server.ports["imaps"], ssl=ctx)
    assert (await r.readline()).startswith(b"* OK")
    xr, xw = await asyncio.open_connection("127.0.0.1", server.ports["xmpp"])
    xw.write(b"<?xml version='1.0'?><stream:stream to='cx.example' version='1.0'"
             b" xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
    await xw.drain()
    got = b""
    while b"</stream:features>" not in got:
        got += await asyncio.wait_for(xr.read(4096), 10)
    await server.stop()
    assert (await asyncio.wait_for(r.readline(), 10)).startswith(b"* BYE")
    rest = b""
    while chunk := await asyncio.wait_for(xr.read(4096), 10):
        rest += chunk
    assert b"system-shutdown" in rest
    w.close()
    xw.close()
