"""In-memory test doubles of the XMPP stores (issue 14 item 6).

The server never runs on these: ``xmpp.stores.Stores`` is built from PostgreSQL in one
place (``xmpp.service``) and has no in-memory default. Unit tests of feature logic build
``memory_stores()`` here instead, so a fallback cannot creep back into ``xmpp/``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from xmpp.features import rsm
from xmpp.features.mam import Filters, Prefs, Row, _rows
from xmpp.features.muc.repo import HistoryRow, OccupantRow, RoomRow
from xmpp.features.pep.repo import LastItem
from xmpp.proto.errors import StanzaError
from xmpp.repo import RosterRow
from xmpp.stores import Stores


class MemoryStore:
    """The XmppStore interface over dicts."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, RosterRow]] = {}
        self.versions: dict[str, int] = {}
        self.requests: dict[str, dict[str, str]] = {}
        self.offline: dict[str, list[tuple[str, datetime]]] = {}
        self.private: dict[tuple[str, str], str] = {}
        self.blocks: dict[str, set[str]] = {}
        self.last: dict[str, tuple[datetime, str]] = {}
        self.avatars: dict[str, tuple[str, bytes, str]] = {}

    async def roster(self, owner: str) -> tuple[int, list[RosterRow]]:
        return self.versions.get(owner, 0), sorted(self.items.get(owner, {}).values(),
                                                   key=lambda r: r.contact)

    async def roster_item(self, owner: str, contact: str) -> RosterRow | None:
        return self.items.get(owner, {}).get(contact)

    async def put_item(self, owner: str, item: RosterRow, notices: Any = ()) -> int:
        self.items.setdefault(owner, {})[item.contact] = item
        self.versions[owner] = self.versions.get(owner, 0) + 1
        return self.versions[owner]

    async def delete_item(self, owner: str, contact: str, notices: Any = ()) -> int | None:
        if self.items.get(owner, {}).pop(contact, None) is None:
            return None
        self.versions[owner] = self.versions.get(owner, 0) + 1
        return self.versions[owner]

    async def subscribers(self, owner: str) -> list[str]:
        return [c for c, r in self.items.get(owner, {}).items()
                if r.subscription in ("from", "both")]

    async def sub_requests(self, owner: str) -> list[tuple[str, str]]:
        return list(self.requests.get(owner, {}).items())

    async def add_sub_request(self, owner: str, contact: str, status: str = "") -> None:
        self.requests.setdefault(owner, {})[contact] = status

    async def drop_sub_request(self, owner: str, contact: str) -> bool:
        return self.requests.get(owner, {}).pop(contact, None) is not None

    async def store_offline(self, owner: str, stanza: str, limit: int) -> bool:
        box = self.offline.setdefault(owner, [])
        if len(box) >= limit:
            return False
        box.append((stanza, datetime.now(UTC)))
        return True

    async def take_offline(self, owner: str) -> list[tuple[str, datetime]]:
        return self.offline.pop(owner, [])

    async def count_offline(self, owner: str) -> int:
        return len(self.offline.get(owner, []))

    async def get_private(self, owner: str, namespace: str) -> str | None:
        return self.private.get((owner, namespace))

    async def set_private(self, owner: str, namespace: str, xml: str) -> None:
        self.private[(owner, namespace)] = xml

    async def all_blocklists(self) -> dict[str, set[str]]:
        return {k: set(v) for k, v in self.blocks.items()}

    async def block(self, owner: str, jids: Any, notices: Any = ()) -> None:
        self.blocks.setdefault(owner, set()).update(jids)

    async def unblock(self, owner: str, jids: Any, notices: Any = ()) -> None:
        if jids is None:
            self.blocks.pop(owner, None)
        else:
            self.blocks.get(owner, set()).difference_update(jids)

    async def last_seen(self, owner: str) -> tuple[datetime, str] | None:
        return self.last.get(owner)

    async def set_last_seen(self, owner: str, seen: datetime, status: str) -> None:
        self.last[owner] = (seen, status)

    async def avatar(self, owner: str) -> tuple[str, bytes, str] | None:
        return self.avatars.get(owner)

    async def set_avatar(self, owner: str, mime_type: str, data: bytes, sha1: str) -> None:
        if data:
            self.avatars[owner] = (mime_type, data, sha1)
        else:
            self.avatars.pop(owner, None)


class MemoryMamStore:
    """The MamStore interface over lists (unit tests, feature tests without a database).

    A row is [id, owner, stanza_id, with_jid, ts, stanza, peer, owner_shown, peer_shown]."""

    def __init__(self) -> None:
        self.rows: list[list[Any]] = []
        self.prefs: dict[str, Prefs] = {}

    async def write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        seen = {(r[2], r[1]) for r in self.rows}
        for owner, id_, with_, text, peer in _rows(rows):
            if (id_, owner) not in seen:
                seen.add((id_, owner))
                self.rows.append([len(self.rows) + 1, owner, id_, with_,
                                  datetime.now(UTC), text, peer, True, peer is not None])

    async def purge(self, owner: str, before: datetime | None = None) -> int:
        n = 0
        for r in self.rows:
            if before is not None and r[4] >= before:
                continue
            if r[1] == owner and r[7]:
                r[7], n = False, n + 1
            if r[6] == owner and r[8]:
                r[8], n = False, n + 1
        self.rows = [r for r in self.rows if r[7] or r[8]]
        return n

    async def all_prefs(self) -> dict[str, Prefs]:
        return dict(self.prefs)

    async def set_prefs(self, owner: str, p: Prefs, notices: Any = ()) -> None:
        self.prefs[owner] = p

    async def query(self, owner: str, f: Filters, req: rsm.Request,
                    count: bool = True) -> tuple[list[Row], bool, int | None]:
        # (id, stanza_id, with, ts, stanza) as `owner` sees them
        mine = [(r[0], r[2], r[3] if r[1] == owner else r[1], r[4], r[5]) for r in self.rows
                if (r[1] == owner and r[7]) or (r[6] == owner and r[8])]
        ids = {r[1]: r[0] for r in mine}

        def key(id_: str) -> int:
            if id_ not in ids:
                raise StanzaError("item-not-found", "No such archive id")
            return ids[id_]

        lo = key(f.after_id) if f.after_id else 0
        hi = key(f.before_id) if f.before_id else 1 << 62
        sel = [r for r in mine if lo < r[0] < hi and (not f.with_ or r[2] == f.with_)
               and (not f.start or r[3] >= f.start) and (not f.end or r[3] <= f.end)]
        total = len(sel)
        if req.after:
            sel = [r for r in sel if r[0] > key(req.after)]
        if req.before:
            sel = [r for r in sel if r[0] < key(req.before)]
        if req.backwards:
            sel.reverse()
        items, complete = rsm.page([Row(r[1], r[3], r[4]) for r in sel[:req.limit]], req)
        return items, complete, total if count else None


class MemoryMucStore:
    """The same interface over dicts (unit tests only: the server needs PostgreSQL)."""

    def __init__(self) -> None:
        self.rooms: dict[str, RoomRow] = {}
        self.occ: dict[tuple[str, str], OccupantRow] = {}

    async def load(self, history: int) -> list[RoomRow]:
        return [RoomRow(r.jid, r.unit, dict(r.config), r.subject, r.subject_nick,
                        dict(r.affiliations), r.history[-history:] if history else [])
                for r in self.rooms.values()]

    async def save_room(self, row: RoomRow) -> None:
        old = self.rooms.get(row.jid)
        row.history = old.history if old else []
        self.rooms[row.jid] = row

    async def load_room(self, jid: str, history: int) -> RoomRow | None:
        return next((r for r in await self.load(history) if r.jid == jid), None)

    async def delete_room(self, jid: str) -> None:
        self.rooms.pop(jid, None)
        for key in [k for k in self.occ if k[0] == jid]:
            del self.occ[key]

    async def occupants(self, room: str) -> list[OccupantRow]:
        return sorted((o for o in self.occ.values() if o.room == room),
                      key=lambda o: (o.nick, o.full))

    async def write_occupants(self, put: list[OccupantRow],
                              gone: list[tuple[str, str]]) -> None:
        for key in gone:
            self.occ.pop(key, None)
        for p in put:
            self.occ[(p.room, p.full)] = p

    async def add_history(self, rows: list[HistoryRow]) -> None:
        for r in rows:
            room = self.rooms.get(r.room)
            if room is not None:
                room.history.append((r.stanza_id, r.nick, r.sender, r.stanza, r.stamp))
                del room.history[:-r.keep or None]


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


def memory_stores() -> Stores:
    """Every store a feature needs, over dicts (no upload: that feature stays off)."""
    return Stores(xmpp=MemoryStore(), pep=MemoryPepStore(),  # type: ignore[arg-type]
                  muc=MemoryMucStore(), mam=MemoryMamStore(), upload=None)
