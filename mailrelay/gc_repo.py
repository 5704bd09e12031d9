"""Message-body garbage collection: the SQL (see `mailrelay.bodies` for the references).

Candidates come from `message_gc` (a trigger adds a body when its last mailbox entry
goes; history expiry and refused submissions add theirs). A candidate still referenced
by any declared table is dropped from the list: when that reference goes, it comes back.
SKIP LOCKED lets every node sweep at once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, TypeAlias

from mailrelay.bodies import BodyRef

Conn: TypeAlias = Any
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


def gc_sql(refs: Sequence[BodyRef]) -> str:
    for r in refs:  # identifiers come from code, never from input: still, check them
        if not (_IDENT.match(r.table) and _IDENT.match(r.column)):
            raise ValueError(f"bad body reference {r}")
    alive = "\n      ".join(
        f"and not exists (select 1 from {r.table} x where x.{r.column} = c.message_id)"
        for r in refs)
    return f"""
with c as (
    select message_id from message_gc order by message_id limit $1 for update skip locked
), dead as (
    select c.message_id as id from c
    where true
      {alive}
), gone as (
    delete from messages m using dead where m.id = dead.id returning m.id
), done as (
    delete from message_gc g using c where g.message_id = c.message_id
)
select count(*) from gone
"""


async def collect_bodies(conn: Conn, refs: Sequence[BodyRef], limit: int = 1000) -> int:
    """Delete up to `limit` unreferenced bodies (one transaction); return how many."""
    async with conn.transaction():
        n = await conn.fetchval(gc_sql(refs), limit)
    return int(n or 0)
