"""PEP persistence: nodes (with their normalised configuration) and items.

``PepStore`` speaks SQL (tables of ``0004_pep_upload.sql``); ``MemoryPepStore`` has the
same interface over dicts, for a host without a database (the unit-test world).
"""

from __future__ import annotations

import itertools
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


class MemoryPepStore:
    """The same interface over dicts (no persistence)."""

    def __init__(self) -> None:
        self.configs: dict[tuple[str, str], dict[str, Any]] = {}
        self.data: dict[tuple[str, str], dict[str, tuple[int, str]]] = {}
        self._seq = itertools.count(1)

    async def node(self, owner: str, node: str) -> dict[str, Any] | None:
        c = self.configs.get((owner, node))
        return None if c is None else dict(c)

    async def nodes(self, owner: str) -> list[str]:
        return sorted(n for o, n in self.configs if o == owner)

    async def create(self, owner: str, node: str, config: dict[str, Any]) -> bool:
        if (owner, node) in self.configs:
            return False
        self.configs[(owner, node)] = dict(config)
        self.data[(owner, node)] = {}
        return True

    async def configure(self, owner: str, node: str, config: dict[str, Any]) -> None:
        self.configs[(owner, node)] = dict(config)
        if "max_items" in config:
            self._trim(owner, node, int(config["max_items"]))

    async def delete(self, owner: str, node: str) -> bool:
        self.data.pop((owner, node), None)
        return self.configs.pop((owner, node), None) is not None

    async def publish(self, owner: str, node: str, item_id: str, payload: str,
                      max_items: int) -> None:
        self.data.setdefault((owner, node), {})[item_id] = (next(self._seq), payload)
        self._trim(owner, node, max_items)

    def _trim(self, owner: str, node: str, keep: int) -> None:
        items = self.data.get((owner, node), {})
        for item_id, _ in sorted(items.items(), key=lambda kv: kv[1][0], reverse=True)[keep:]:
            del items[item_id]

    async def retract(self, owner: str, node: str, item_id: str) -> bool:
        return self.data.get((owner, node), {}).pop(item_id, None) is not None

    def _ordered(self, owner: str, node: str) -> list[tuple[str, str]]:
        items = self.data.get((owner, node), {})
        return [(k, v[1]) for k, v in sorted(items.items(), key=lambda kv: kv[1][0],
                                             reverse=True)]

    async def items(self, owner: str, node: str, limit: int | None = None,
                    ids: list[str] | None = None) -> list[tuple[str, str]]:
        out = self._ordered(owner, node)
        if ids is not None:
            return [i for i in out if i[0] in ids]
        return out[:limit] if limit is not None else out

    async def last_items(self, owners: list[str], nodes: list[str]) -> list[LastItem]:
        out: list[LastItem] = []
        for (owner, node), config in self.configs.items():
            if owner in owners and node in nodes:
                items = self._ordered(owner, node)
                if items:
                    out.append((owner, node, dict(config), items[0][0], items[0][1]))
        return out
