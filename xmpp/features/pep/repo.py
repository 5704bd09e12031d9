"""PEP persistence: nodes (with their normalised configuration) and items.

``PepStore`` speaks SQL (tables of ``0004_pep_upload.sql``); ``PepRepo`` is its interface
(the unit tests' double over dicts is in ``tests/xmpp_doubles.py``).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

#: (owner, node, config, item id, payload) of a node's newest item.
LastItem = tuple[str, str, dict[str, Any], str, str]


class PepRepo(Protocol):
    async def node(self, owner: str, node: str) -> dict[str, Any] | None: ...
    async def nodes(self, owner: str) -> list[str]: ...
    async def create(self, owner: str, node: str, config: dict[str, Any]) -> bool: ...
    async def configure(self, owner: str, node: str, config: dict[str, Any]) -> None: ...
    async def delete(self, owner: str, node: str) -> bool: ...
    async def publish(self, owner: str, node: str, item_id: str, payload: str,
                      max_items: int) -> None: ...
    async def retract(self, owner: str, node: str, item_id: str) -> bool: ...
    async def items(self, owner: str, node: str, limit: int | None = None,
                    ids: list[str] | None = None) -> list[tuple[str, str]]: ...
    async def last_items(self, owners: list[str], nodes: list[str]) -> list[LastItem]: ...


class PepStore:
    """PostgreSQL tables ``xmpp_pep_node`` and ``xmpp_pep_item``."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def node(self, owner: str, node: str) -> dict[str, Any] | None:
        async with self.pool.acquire() as conn:
            raw = await conn.fetchval(
                "select config from xmpp_pep_node where owner = $1 and node = $2", owner, node)
        return None if raw is None else dict(json.loads(raw))

    async def nodes(self, owner: str) -> list[str]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "select node from xmpp_pep_node where owner = $1 order by node", owner)
        return [r["node"] for r in rows]

    async def create(self, owner: str, node: str, config: dict[str, Any]) -> bool:
        async with self.pool.acquire() as conn:
            done = await conn.execute(
                """insert into xmpp_pep_node(owner, node, config) values ($1, $2, $3::jsonb)
                   on conflict do nothing""", owner, node, json.dumps(config))
        return not done.endswith(" 0")

    async def configure(self, owner: str, node: str, config: dict[str, Any]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "update xmpp_pep_node set config = $3::jsonb where owner = $1 and node = $2",
                owner, node, json.dumps(config))
            if "max_items" in config:
                await self._trim(conn, owner, node, int(config["max_items"]))

    async def delete(self, owner: str, node: str) -> bool:
        async with self.pool.acquire() as conn:
            done = await conn.execute(
                "delete from xmpp_pep_node where owner = $1 and node = $2", owner, node)
        return not done.endswith(" 0")

    async def publish(self, owner: str, node: str, item_id: str, payload: str,
                      max_items: int) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """insert into xmpp_pep_item(owner, node, item_id, payload) values ($1, $2, $3, $4)
                   on conflict (owner, node, item_id) do update set payload = $4,
                   published = now(),
                   seq = nextval(pg_get_serial_sequence('xmpp_pep_item', 'seq'))""",
                owner, node, item_id, payload)
            await self._trim(conn, owner, node, max_items)

    @staticmethod
    async def _trim(conn: Any, owner: str, node: str, keep: int) -> None:
        await conn.execute(
            """delete from xmpp_pep_item where owner = $1 and node = $2 and seq not in (
                 select seq from xmpp_pep_item where owner = $1 and node = $2
                 order by seq desc limit $3)""", owner, node, keep)

    async def retract(self, owner: str, node: str, item_id: str) -> bool:
        async with self.pool.acquire() as conn:
            done = await conn.execute(
                "delete from xmpp_pep_item where owner = $1 and node = $2 and item_id = $3",
                owner, node, item_id)
        return not done.endswith(" 0")

    async def items(self, owner: str, node: str, limit: int | None = None,
                    ids: list[str] | None = None) -> list[tuple[str, str]]:
        async with self.pool.acquire() as conn:
            if ids is not None:
                rows = await conn.fetch(
                    """select item_id, payload from xmpp_pep_item where owner = $1 and node = $2
                       and item_id = any($3) order by seq desc""", owner, node, ids)
            else:
                rows = await conn.fetch(
                    """select item_id, payload from xmpp_pep_item where owner = $1 and node = $2
                       order by seq desc limit $3""", owner, node, limit)
        return [(r["item_id"], r["payload"]) for r in rows]

    async def last_items(self, owners: list[str], nodes: list[str]) -> list[LastItem]:
        if not owners or not nodes:
            return []
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """select distinct on (i.owner, i.node) i.owner, i.node, n.config, i.item_id,
                          i.payload
                   from xmpp_pep_item i join xmpp_pep_node n using (owner, node)
                   where i.owner = any($1) and i.node = any($2)
                   order by i.owner, i.node, i.seq desc""", owners, nodes)
        return [(r["owner"], r["node"], dict(json.loads(r["config"])), r["item_id"],
                 r["payload"]) for r in rows]

