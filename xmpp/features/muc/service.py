"""The MUC component at ``conference.<domain>`` (XEP-0045): dispatch of every stanza
addressed to it (``Router.components``), the rooms in memory, fan-out, unit rooms kept in
sync with the directory, and write-behind persistence.

The hot path (a groupchat message) is a dict lookup, one serialisation and one buffered
write per occupant session; nothing waits for the database. Durable changes (room
config, affiliations, subject, recent history) are queued to ``Writer``, one task that
batches them. Every broadcast groupchat message calls the ``muc/message`` sync hook with a
``MucMessage`` (the archive listens there); an iq to a room that the MUC itself does not
serve fires ``muc/room/iq`` on the bus (``RoomIq``: the archive answers MAM queries).

Across nodes (issue 14, ``xmpp.cluster``) a room runs on its home node only. Occupancy is
written behind to ``xmpp_muc_occupant`` (each occupant session: nick, role, node, last
presence); a node that becomes a room's home (``cluster/room/home``) reloads the room and
its occupants from PostgreSQL, keeps those whose sessions still live (local, or a proxy
on their node) and lets the others leave with unavailable presence. Rooms homed on
another node are not written from here (their home's state is newer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from xml.etree.ElementTree import Element, SubElement, fromstring

from directory.model import Role

from ...dircache import Snapshot
from ...host import Host
from ...jid import JIDError, parse_jid
from ...proto import ns
from ...proto.errors import StanzaError, error_reply
from ...proto.serializer import escape_attr, to_bytes, to_string
from ...router import Resource, SessionEvent, StanzaEvent
from ...stanzas import iq_result
from . import admin, forms
from .config import MAX_HISTORY, MUC, RoomConfig
from .repo import HistoryRow, MucStoreLike, OccupantRow, RoomRow
from .room import REQUEST, USER, HistoryItem, Room

log = logging.getLogger("cxgw.xmpp.muc")

DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
PING = "urn:xmpp:ping"
ROOM_FEATURES = [DISCO_INFO, DISCO_ITEMS, admin.STABLE_ID, REQUEST, "urn:xmpp:sid:0"]
_PH = "\ue000cx-to\ue001"
_PHB = _PH.encode()


@dataclass(frozen=True, slots=True, eq=False)
class MucMessage:
    """Payload of ``muc/message``: a groupchat message a room broadcast. `stanza` is as
    sent (from room/nick, with ``<stanza-id by=room/>``, no 'to'); do not modify it."""

    room: str          # room bare JID
    stanza_id: str     # XEP-0359 id, by=room
    nick: str
    sender: str        # real bare JID of the sender
    stanza: Element
    stamp: float       # epoch seconds
    archive: bool      # room config muc#roomconfig_enablelogging


@dataclass(frozen=True, slots=True, eq=False)
class RoomIq:
    """Payload of ``muc/room/iq``: an iq to a room the MUC does not serve itself. A
    handler that serves it returns the reply (an iq result or error); the requester is
    an occupant or not as the room says (``muc/archive/allowed``)."""

    room: str          # room bare JID
    stanza: Element
    origin: Resource


def unit_config(name: str) -> RoomConfig:
    return RoomConfig(name=name, persistent=True, public=True, members_only=True,
                      whois="anyone", history_length=50, logging=True)


class Delivery:
    """The rooms' Outbox: serialise once, set 'to' per recipient on the bytes."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.router = host.router

    def broadcast(self, el: Element, to: list[str]) -> None:
        el.set("to", _PH)
        data = to_bytes(el)
        del el.attrib["to"]
        head, _, tail = data.partition(_PHB)
        session = self.router.session
        for full in to:
            target = session(full)
            if target is not None:
                target.deliver_bytes(head + escape_attr(full).encode() + tail)

    def send(self, el: Element) -> None:
        to = el.get("to", "")
        if "/" in to:
            self.router.to_full(to, el)
            return
        if self.router.to_available(to, el) or not self.host.directory.exists(to):
            return
        if el.tag == ns.MESSAGE and el.get("type", "normal") == "normal":
            # Invitations to someone offline wait in offline storage (XEP-0160).
            self.host.spawn(self.host.bus.fire("message/offline/handle",
                                               StanzaEvent(el, None, to)))


class Writer:
    """Write-behind: jobs run in order by one task; consecutive history rows go as one
    batch (so a busy room costs one INSERT per batch, not one per message)."""

    def __init__(self, store: MucStoreLike) -> None:
        self.store = store
        self.jobs: deque[tuple[str, Any]] = deque()
        self.task: asyncio.Task[None] | None = None

    def push(self, kind: str, arg: Any) -> None:
        self.jobs.append((kind, arg))
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self.jobs:
                kind, arg = self.jobs.popleft()
                try:
                    if kind == "history":
                        batch = [arg]
                        while self.jobs and self.jobs[0][0] == "history" and len(batch) < 1000:
                            batch.append(self.jobs.popleft()[1])
                        await self.store.add_history(batch)
                    elif kind == "occupants":
                        batch = [arg]
                        while self.jobs and self.jobs[0][0] == "occupants":
                            batch.append(self.jobs.popleft()[1])
                        await self.store.write_occupants(*_last_word(batch))
                    elif kind == "save":
                        await self.store.save_room(arg)
                    elif kind == "delete":
                        await self.store.delete_room(arg)
                except Exception:
                    log.exception("muc write (%s) failed", kind)
        finally:
            self.task = None

    async def flush(self) -> None:
        while self.task is not None:
            await asyncio.shield(self.task)


class MucService:
    def __init__(self, host: Host, store: MucStoreLike,
                 clock: Callable[[], float] = time.time) -> None:
        self.host = host
        self.domain = f"conference.{host.domain}"
        self.store = store
        self.clock = clock
        self.out = Delivery(host)
        self.writer = Writer(store)
        self.rooms: dict[str, Room] = {}
        self.persisted: set[str] = set()
        self.joined: dict[str, set[str]] = {}  # session full JID → rooms it is in

    # -- lifecycle ------------------------------------------------------------------------------


    async def archive_allowed(self, ev: Any) -> bool | None:
        """May `ev.origin` read the archive of room `ev.target` (XEP-0313 §5 on MUC)?

        Members-only or password-protected rooms: occupants and affiliated users only (the
        history is what joining would show them); open rooms: anyone not banned."""
        room = self.rooms.get(ev.target)
        if room is None or ev.origin is None:
            return None
        bare = ev.origin.bare
        aff = room.affiliation(bare)
        if aff == "outcast":
            return False
        if room.config.members_only or room.config.password:
            return aff in ("owner", "admin", "member") or bool(room.occupants_of(bare))
        return True
    async def start(self) -> None:
        for row in await self.store.load(MAX_HISTORY):
            if row.config.get("persistent", False) or row.unit is not None:
                self._from_row(row)  # temporary rooms: read by their home when used
        self.sync(self.host.directory.snapshot)

    def _from_row(self, row: RoomRow) -> Room:
        room = Room(row.jid, RoomConfig.from_dict(row.config), self.out, unit=row.unit)
        for jid, (aff, managed) in row.affiliations.items():
            room.affiliations[jid] = aff
            if managed:
                room.managed.add(jid)
        room.subject, room.subject_nick = row.subject, row.subject_nick
        for sid, nick, sender, xml, stamp in row.history:
            try:
                el = fromstring(f'<w xmlns="{ns.CLIENT}">{xml}</w>')[0]
            except Exception:
                continue
            room.history.append(HistoryItem(sid, nick, sender, stamp, el, True))
        old = self.rooms.get(room.jid)
        if old is not None:  # read again (a new home): the same object, as stored now
            vars(old).update(vars(room))
            room = old
        self.rooms[room.jid] = room
        self.persisted.add(room.jid)
        return room

    async def stop(self) -> None:
        await self.writer.flush()

    @property
    def node_id(self) -> str:
        return str(getattr(self.host.router.remote, "node_id", ""))

    def _elsewhere(self, jid: str) -> bool:
        """Is the room homed on another node (its state there is newer than ours)?"""
        homes = getattr(self.host.router.remote, "room_homes", None)
        home = homes.get(jid) if homes else None
        return home is not None and home != self.node_id

    async def on_room_home(self, jid: str) -> None:
        """This node became the home of room `jid` (issue 14): the room as stored and its
        occupants come from PostgreSQL. Occupant sessions that still live (here, or on
        the node the row names) stay in the room without rejoining; the others leave with
        unavailable presence to the rest (RFC 6121 §4.5.2 on their behalf)."""
        if jid.partition("@")[2] != self.domain:
            return
        await self.writer.flush()
        row = await self.store.load_room(jid, MAX_HISTORY)
        old = self.rooms.get(jid)
        if old is not None:
            for full in old.by_full:
                self._untrack(jid, full)
        if row is not None:
            room = self._from_row(row)
        elif old is not None:  # not stored yet (a unit room the directory just made)
            room = old
            room.occupants.clear()
            room.by_full.clear()
        else:
            return  # a new room: created by its first join
        room.touched.clear()
        gone = []
        for occ in await self.store.occupants(jid):
            try:
                presence = fromstring(f'<w xmlns="{ns.CLIENT}">{occ.presence}</w>')[0]
            except Exception:  # noqa: BLE001 - written by us: a broken row is a gone occupant
                presence = Element(ns.PRESENCE)
            room.restore(occ.full, occ.nick, occ.role, presence)
            self.joined.setdefault(occ.full, set()).add(jid)
            if self._node_of(occ.full) != occ.node:
                gone.append(occ.full)
        for full in gone:  # their sessions died with their node (or ended meanwhile)
            self._untrack(jid, full)
            room.session_gone(full)
        if gone:
            log.info("room %s: %d occupant sessions gone with their node", jid, len(gone))
        self._after(room)

    async def on_room_lost(self, jid: str) -> None:
        """Another node took room `jid` over (this one was thought dead): its occupancy
        is the new home's business now."""
        room = self.rooms.get(jid)
        if room is None:
            return
        for full in room.by_full:
            self._untrack(jid, full)
        room.occupants.clear()
        room.by_full.clear()
        room.touched.clear()

    def _untrack(self, jid: str, full: str) -> None:
        rooms = self.joined.get(full)
        if rooms is not None:
            rooms.discard(jid)
            if not rooms:
                del self.joined[full]

    def _node_of(self, full: str) -> str | None:
        """The node of a live session (None: no such session)."""
        s = self.host.router.session(full)
        if s is None:
            return None
        return str(getattr(s, "node", "")) if not s.local else self.node_id

    # -- directory: one members-only room per unit -----------------------------------------------

    async def on_directory(self, _old: Snapshot, new: Snapshot) -> None:
        self.sync(new)

    def sync(self, snap: Snapshot) -> None:
        """Unit rooms follow the directory: members are members, unit-admins are admins;
        a removed or moved account loses its affiliation (and leaves with status 321).

        A unit room is always created here, never adopted: an ad-hoc room that already
        holds a unit's address (created before the unit existed) is closed — occupants
        get the XEP-0045 §10.9 destroy notice, its stored config, affiliations (its
        creator's ownership), history and room archive go — and a fresh unit room takes
        the address with the directory's members only."""
        for code, name in snap.units.items():
            jid = f"{code}@{self.domain}"
            room = self.rooms.get(jid)
            if room is not None and room.unit != code:
                self._close_squatted(room, code)
                room = None
            if room is None:
                room = self.rooms[jid] = Room(jid, unit_config(name), self.out, unit=code)
                room.changed = True
            if room.config.name != name:
                room.set_config(replace(room.config, name=name))
            desired: dict[str, str] = {}
            for bare in snap.members.get(code, ()):
                acct = snap.accounts[bare]
                desired[bare] = "admin" if acct.has_role(Role.UNIT_ADMIN) else "member"
            for bare in list(room.managed):
                if bare not in desired:
                    room.managed.discard(bare)
                    room.set_affiliation(bare, "none")
                    room.changed = True
            for bare, aff in desired.items():
                if bare not in room.managed:
                    room.managed.add(bare)
                    room.changed = True
                room.set_affiliation(bare, aff)
            self._after(room)
        for room in list(self.rooms.values()):
            if room.unit is not None and room.unit not in snap.units:
                room.destroy("The unit was removed")
                self._after(room)

    def _close_squatted(self, room: Room, code: str) -> None:
        owners = sorted(j for j, a in room.affiliations.items() if a == "owner")
        log.warning("MUC room %s existed before unit %s: closed (owners %s), a unit room"
                    " replaces it", room.jid, code, ", ".join(owners) or "none")
        room.affiliations.clear()
        room.managed.clear()
        room.destroy("This address now belongs to the unit's room")
        room.history.clear()
        self.persisted.add(room.jid)  # make sure the stored row (and history) is deleted
        self._after(room)
        # The room's archive (MAM) goes too: the unit's members must not read the
        # squatter's messages as their room's past.
        self.host.spawn(self.host.bus.fire("muc/room/purged", room.jid))

    # -- persistence and room lifetime -----------------------------------------------------------

    def _after(self, room: Room | None) -> None:
        if room is None:
            return
        gone = room.destroyed or (not room.config.persistent and not room.occupants
                                  and room.unit is None)
        if gone:
            if self.rooms.get(room.jid) is room:
                del self.rooms[room.jid]
            room.touched.clear()
            if room.jid in self.persisted:
                self.persisted.discard(room.jid)
                self.writer.push("delete", room.jid)  # its occupancy rows go too
            return
        if room.touched:
            if self.node_id:
                self._write_occupancy(room)
            else:  # one process without a node identity: nobody else reads occupancy
                room.touched.clear()
        if room.changed and not self._elsewhere(room.jid):
            # Temporary rooms are stored too while they exist: a new home (issue 14)
            # needs their configuration and owners; they go when the last occupant does.
            room.changed = False
            self.persisted.add(room.jid)
            self.writer.push("save", RoomRow(
                room.jid, room.unit, room.config.to_dict(), room.subject,
                room.subject_nick,
                {j: (a, j in room.managed) for j, a in room.affiliations.items()}))

    def _write_occupancy(self, room: Room) -> None:
        put: list[OccupantRow] = []
        gone: list[tuple[str, str]] = []
        for full in room.touched:
            occ = room.by_full.get(full)
            if occ is None:
                gone.append((room.jid, full))
                continue
            node = self._node_of(full)
            if node:  # else a session not announced yet: written with its next change
                put.append(OccupantRow(room.jid, full, occ.nick, occ.role, node,
                                       to_string(occ.sessions[full])))
        room.touched.clear()
        self.writer.push("occupants", (put, gone))

    def _track(self, room: Room, full: str) -> None:
        if full in room.by_full:
            self.joined.setdefault(full, set()).add(room.jid)
        else:
            rooms = self.joined.get(full)
            if rooms is not None:
                rooms.discard(room.jid)
                if not rooms:
                    del self.joined[full]

    async def on_closed(self, ev: SessionEvent) -> None:
        self._gone(ev.session.full)

    async def on_broadcast(self, ev: StanzaEvent) -> None:
        # RFC 6121 §4.6.3: unavailable goes to everyone that got directed presence (rooms).
        if ev.stanza.get("type") == "unavailable" and ev.origin is not None:
            self._gone(ev.origin.full)

    def _gone(self, full: str) -> None:
        for jid in self.joined.pop(full, ()):
            room = self.rooms.get(jid)
            if room is not None:
                room.session_gone(full)
                self._after(room)

    # -- the component entry point (synchronous, from Router.route) ----------------------------

    def handle(self, stanza: Element, origin: Resource) -> None:
        try:
            jid = parse_jid(stanza.get("to", ""))
        except JIDError:
            _bounce(stanza, origin, StanzaError("jid-malformed"))
            return
        if not jid.local:
            self._service(stanza, origin)
            return
        room_jid = f"{jid.local}@{self.domain}"
        room = self.rooms.get(room_jid)
        tag = stanza.tag
        try:
            if tag == ns.PRESENCE:
                room = self._presence(room, room_jid, jid.resource, stanza, origin)
            elif tag == ns.MESSAGE:
                self._message(room, jid.resource, stanza, origin)
            elif stanza.get("type") in ("get", "set"):
                self._iq(room, jid.resource, stanza, origin)
        except StanzaError as exc:
            _bounce(stanza, origin, exc)
        self._after(room)

    def _presence(self, room: Room | None, room_jid: str, nick: str, stanza: Element,
                  origin: Resource) -> Room | None:
        ptype = stanza.get("type")
        if not nick:
            if ptype is None:
                raise StanzaError("jid-malformed", "Join with room@service/nick")  # §7.2.1
            return room
        created = False
        if room is None:
            if ptype is not None:
                return None
            # §10.1: joining a room that does not exist creates it; the creator owns it.
            # With the MUC <x/> it stays locked until configured (or made instant).
            locked = stanza.find(ns.q(MUC, "x")) is not None
            room = Room(room_jid, RoomConfig(), self.out, locked=locked)
            room.affiliations[origin.bare] = "owner"
            room.changed = True  # stored while it exists: a new home needs its owner
            self.rooms[room_jid] = room
            created = True
        room.presence(stanza, origin.full, nick, self.clock(), created=created)
        self._track(room, origin.full)
        return room

    def _message(self, room: Room | None, nick: str, stanza: Element, origin: Resource) -> None:
        mtype = stanza.get("type", "normal")
        if mtype == "error":
            return
        if room is None:
            raise StanzaError("item-not-found", "No such room")
        full = origin.full
        if nick:
            room.private(stanza, full, nick)
        elif mtype == "groupchat":
            item = room.groupchat(stanza, full, self.clock())
            if item is not None:
                self._broadcasted(room, item, origin)
        else:
            x = stanza.find(ns.q(USER, "x"))
            form = stanza.find(forms.X)
            if x is not None and x.find(ns.q(USER, "invite")) is not None:
                for inv in x.findall(ns.q(USER, "invite")):
                    room.invite(stanza, full, inv)
            elif x is not None and x.find(ns.q(USER, "decline")) is not None:
                room.decline(full, x.find(ns.q(USER, "decline")))  # type: ignore[arg-type]
            elif form is not None and forms.form_type(form) == REQUEST:
                room.voice_request(full, forms.values(form))
            else:
                raise StanzaError("bad-request", "Send groupchat messages to the room")

    def _broadcasted(self, room: Room, item: HistoryItem, origin: Resource) -> None:
        if item.has_body and room.config.persistent:
            self.writer.push("history", HistoryRow(
                room.jid, item.stanza_id, item.nick, item.sender, to_string(item.stanza),
                item.stamp, room.config.history_length))
        # A sync hook, not a bus event (docs/NOTES.md "Two event systems"): a listener
        # such as the archive only queues the message in memory for its own writer (pure,
        # per stanza, on the fan-out fast path); a bus event would cost a task per message.
        hooks = self.host.hooks.handlers("muc/message")
        if hooks:
            ev = MucMessage(room.jid, item.stanza_id, item.nick, item.sender, item.stanza,
                            item.stamp, room.config.logging)
            for hook in hooks:
                hook(ev)

    def _iq(self, room: Room | None, nick: str, stanza: Element, origin: Resource) -> None:
        if room is None:
            raise StanzaError("item-not-found", "No such room")
        child = stanza[0] if len(stanza) else None
        if child is None:
            raise StanzaError("bad-request")
        key = (stanza.get("type"), child.tag)
        full = origin.full
        if nick:
            if key == ("get", ns.q(PING, "ping")):  # XEP-0410 self-ping
                occ = room.by_full.get(full)
                if occ is None or occ.nick != nick:
                    raise StanzaError("not-acceptable", "Not an occupant")
                origin.deliver(iq_result(stanza))
                return
            raise StanzaError("service-unavailable")
        result: Element | None
        if key == ("get", ns.q(DISCO_INFO, "query")):
            if child.get("node"):
                raise StanzaError("item-not-found")
            # Other features add what they serve on every room (``muc/room/features``,
            # a sync hook returning namespaces; e.g. MAM, XEP-0313 §7).
            extra = [f for h in self.host.hooks.handlers("muc/room/features")
                     for f in (h(room.jid) or ())]
            result = admin.room_info(room, [*ROOM_FEATURES, *extra])
        elif key == ("get", ns.q(DISCO_ITEMS, "query")):
            result = Element(ns.q(DISCO_ITEMS, "query"))
        elif key == ("get", ns.q(admin.ADMIN, "query")):
            result = admin.admin_get(room, full, child)
        elif key == ("set", ns.q(admin.ADMIN, "query")):
            admin.admin_set(room, full, child)
            result = None
        elif key == ("get", ns.q(admin.OWNER, "query")):
            result = admin.owner_get(room, full, child)
        elif key == ("set", ns.q(admin.OWNER, "query")):
            if room.unit is not None:
                raise StanzaError("not-allowed", "Unit rooms follow the directory")
            admin.owner_set(room, full, child)
            result = None
        elif key == ("get", ns.q(PING, "ping")):
            result = None
        elif self.host.bus.has("muc/room/iq"):
            # Another feature's iq on the room (MAM queries, XEP-0313 §4): a bus event,
            # since its handler waits for the database; run in the sender's ordered lane.
            ev = RoomIq(room.jid, stanza, origin)
            origin.run(lambda: self._room_iq(ev))
            return
        else:
            raise StanzaError("service-unavailable")
        origin.deliver(iq_result(stanza, result))

    async def _room_iq(self, ev: RoomIq) -> None:
        try:
            reply = await self.host.bus.fire("muc/room/iq", ev)
        except StanzaError as exc:
            reply = error_reply(ev.stanza, exc)
        if reply is None:
            reply = error_reply(ev.stanza, StanzaError("service-unavailable"))
        ev.origin.deliver(reply)

    def _service(self, stanza: Element, origin: Resource) -> None:
        """Stanzas to conference.<domain> itself: disco (XEP-0045 §6.1, §6.3), ping."""
        if stanza.tag != ns.IQ:
            if stanza.tag == ns.MESSAGE:
                _bounce(stanza, origin, StanzaError("service-unavailable"))
            return
        if stanza.get("type") not in ("get", "set"):
            return
        child = stanza[0] if len(stanza) else None
        tag = child.tag if child is not None else ""
        if stanza.get("type") == "get" and tag == ns.q(DISCO_INFO, "query"):
            q = Element(tag)
            SubElement(q, ns.q(DISCO_INFO, "identity"),
                       {"category": "conference", "type": "text", "name": "Chatrooms"})
            for f in (DISCO_INFO, DISCO_ITEMS, MUC, admin.STABLE_ID, PING):
                SubElement(q, ns.q(DISCO_INFO, "feature"), {"var": f})
            origin.deliver(iq_result(stanza, q))
        elif stanza.get("type") == "get" and tag == ns.q(DISCO_ITEMS, "query"):
            q = Element(tag)
            for jid in sorted(self.rooms):
                room = self.rooms[jid]
                if room.config.public and not room.locked:
                    SubElement(q, ns.q(DISCO_ITEMS, "item"),
                               {"jid": jid, "name": room.config.name or jid.partition("@")[0]})
            origin.deliver(iq_result(stanza, q))
        elif stanza.get("type") == "get" and tag == ns.q(PING, "ping"):
            origin.deliver(iq_result(stanza))
        else:
            _bounce(stanza, origin, StanzaError("service-unavailable"))

    # -- for the server's disco#items -------------------------------------------------------------

    def host_items(self) -> list[tuple[str, str]]:
        return [(self.domain, "Chatrooms")]


def _bounce(stanza: Element, origin: Resource, error: StanzaError) -> None:
    if stanza.get("type") != "error":
        origin.deliver(error_reply(stanza, error))


def _last_word(jobs: list[tuple[list[OccupantRow], list[tuple[str, str]]]]
               ) -> tuple[list[OccupantRow], list[tuple[str, str]]]:
    """Occupancy changes of several jobs as one write: the last change of each (room,
    session) wins (within one job a session is either written or gone)."""
    last: dict[tuple[str, str], OccupantRow | None] = {}
    for put, gone in jobs:
        for p in put:
            last[(p.room, p.full)] = p
        for g in gone:
            last[g] = None
    return ([p for p in last.values() if p is not None],
            [k for k, v in last.items() if v is None])
