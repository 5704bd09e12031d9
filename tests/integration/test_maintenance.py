"""Storage maintenance as its own component (issue 13 item 7): it runs with the IMAP and
XMPP listeners off, collects only bodies nothing refers to, and removes `.part` leftovers."""

from __future__ import annotations

import os
import time

import pytest

from mailrelay.bodies import all_refs


@pytest.fixture
def cfg_overrides() -> dict[str, dict[str, object]]:
    off = {k: "" for k in ("imap", "imaps", "xmpp", "xmpps", "submission", "submissions")}
    return {"listen": off}


async def test_bodies_collected_without_imap_and_references_respected(server):
    pool = server.services.db.pool
    maint = server.services.components["maintenance"]
    assert not any(ep.protocol in ("imap", "xmpp") for ep in server.endpoints)
    ids = [await pool.fetchval("insert into messages(raw, size) values ($1, 1) returning id",
                               b"x") for _ in range(2)]
    await pool.execute("insert into deliveries(queue_id, message_id, sender, recipient, status)"
                       " values ('Q', $1, 'a@x', 'b@y', 'delivered')", ids[1])
    await pool.execute("insert into message_gc(message_id) select unnest($1::bigint[])", ids)
    assert await maint.collect_bodies() == 1
    left = {r["id"] for r in await pool.fetch("select id from messages")}
    assert ids[0] not in left and ids[1] in left


async def test_every_column_pointing_at_bodies_is_declared(server):
    """A table that refers to message bodies but is not declared in `mailrelay.bodies`
    would have its bodies deleted under it."""
    pool = server.services.db.pool
    rows = await pool.fetch(
        "select c.table_name, c.column_name from information_schema.columns c"
        " where c.table_schema = 'public' and c.data_type = 'bigint'"
        " and c.column_name like '%message_id' and c.table_name not in ('messages', 'message_gc')")
    found = {(r["table_name"], r["column_name"]) for r in rows}
    declared = {(r.table, r.column) for r in all_refs()}
    assert ("queue", "message_id") in found  # the query sees the known ones
    assert found <= declared, found - declared


async def test_sweep_removes_interrupted_upload_files(server):
    directory = server.services.cfg.state_path / "upload"
    directory.mkdir(parents=True, exist_ok=True)
    old, fresh = directory / "aaaa.part", directory / "bbbb.part"
    old.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    past = time.time() - 7200
    os.utime(old, (past, past))
    await server.services.components["maintenance"].sweep()
    assert not old.exists() and fresh.exists()
