"""Roster management (RFC 6121 §2) with versioning (§2.6), the subscription state machine
(§3, pure rules in ``state``) and shared groups from the directory (``shared``).

Directory-derived items are read-only 'both' subscriptions: a roster set or remove on
them is ``not-allowed``, subscription requests between colleagues are answered at once.
A personal item for a colleague only adds its groups. The roster version is
``<personal counter>-<digest of the shared items>``, stable across restarts.

Several nodes (issue 14): a change of a personal item commits a notice
(``xmpp.changes``, kind ``roster``, naming the contact); the other nodes push the item as
it is now to their own interested sessions. Each node pushes only to local sessions (a
directory change is seen by every node itself).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from xml.etree.ElementTree import Element, SubElement

from ...dircache import Snapshot
from ...events import PresenceShare, RosterQuery
from ...host import Host
from ...jid import JIDError, parse_jid
from ...proto import ns
from ...proto.errors import StanzaError
from ...repo import RosterRow
from ...router import IqEvent, Resource, SessionEvent, StanzaEvent
from ...stanzas import iq_result
from .shared import SharedItem, digest, is_shared_contact, shared_items
from .state import SubState, inbound, outbound

ROSTER = "jabber:iq:roster"
QUERY = ns.q(ROSTER, "query")
ITEM = ns.q(ROSTER, "item")
GROUP = ns.q(ROSTER, "group")
INTERESTED = "roster"  # Resource.data key: the resource requested the roster (§2.1.6)


@dataclass(frozen=True, slots=True)
class Item:
    jid: str
    name: str
    subscription: str
    ask: bool
    groups: tuple[str, ...]
    shared: bool = False


def item_element(item: Item, remove: bool = False) -> Element:
    attrs = {"jid": item.jid, "subscription": "remove" if remove else item.subscription}
    if item.name and not remove:
        attrs["name"] = item.name
    if item.ask and not remove:
        attrs["ask"] = "subscribe"
    el = Element(ITEM, attrs)
    if not remove:
        for group in item.groups:
            SubElement(el, GROUP).text = group
    return el


class Roster:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.store = host.store
        self.router = host.router

    @property
    def mode(self) -> str:
        return self.host.cfg.directory_groups

    def _shared(self, owner: str, snapshot: Snapshot | None = None) -> dict[str, SharedItem]:
        return shared_items(snapshot or self.host.directory.snapshot, owner, self.mode)

    async def items(self, owner: str) -> tuple[str, dict[str, Item]]:
        personal_ver, rows = await self.store.roster(owner)
        shared = self._shared(owner)
        merged = {jid: Item(jid, s.name, "both", False, (s.group,), True)
                  for jid, s in shared.items()}
        for r in rows:
            have = merged.get(r.contact)
            if have is not None:
                extra = tuple(g for g in r.groups if g not in have.groups)
                merged[r.contact] = Item(have.jid, have.name, "both", False,
                                         have.groups + extra, True)
            else:
                merged[r.contact] = Item(r.contact, r.name, r.subscription, r.ask, r.groups)
        return f"{personal_ver}-{digest(shared)}", merged

    async def version(self, owner: str) -> str:
        ver, _ = await self.items(owner)
        return ver

    # -- roster get/set (RFC 6121 §2.2, §2.3) ---------------------------------------------

    async def on_get(self, ev: IqEvent) -> Element:
        ev.origin.data[INTERESTED] = True
        ver, items = await self.items(ev.origin.bare)
        query = ev.stanza[0]
        asked = query.get("ver")
        if asked is not None and asked == ver:
            return iq_result(ev.stanza)  # RFC 6121 §2.6.3: no changes, empty result
        out = Element(QUERY, {"ver": ver})
        for jid in sorted(items):
            out.append(item_element(items[jid]))
        return iq_result(ev.stanza, out)

    async def on_set(self, ev: IqEvent) -> Element:
        owner = ev.origin.bare
        query = ev.stanza[0]
        items = query.findall(ITEM)
        if len(items) != 1 or len(query) != 1:
            raise StanzaError("bad-request", "Exactly one item")  # RFC 6121 §2.3.3
        el = items[0]
        try:
            contact = str(parse_jid(el.get("jid", "")).bare)
        except JIDError:
            raise StanzaError("bad-request", "Invalid JID") from None
        if contact == owner:
            raise StanzaError("not-allowed", "That is your own address")
        if is_shared_contact(self.host.directory.snapshot, owner, contact, self.mode):
            raise StanzaError("not-allowed", "Directory contacts are managed by the directory")
        if el.get("subscription") == "remove":
            await self._remove(ev.origin, contact)
            return iq_result(ev.stanza)
        groups: list[str] = []
        for g in el.findall(GROUP):
            name = (g.text or "").strip()
            if not name:
                raise StanzaError("not-acceptable", "Empty group name")  # §2.3.3
            if name in groups:
                raise StanzaError("bad-request", "Duplicate group")  # §2.3.3
            groups.append(name)
        old = await self.store.roster_item(owner, contact)
        # RFC 6121 §2.1.2.5: 'subscription' and 'ask' from a client are ignored.
        row = RosterRow(contact, el.get("name", "")[:1024],
                        old.subscription if old else "none", old.ask if old else False,
                        tuple(groups))
        personal = await self.store.put_item(owner, row, self._notice(owner, contact))
        await self._push(owner, Item(contact, row.name, row.subscription, row.ask, row.groups),
                         personal)
        return iq_result(ev.stanza)

    async def _remove(self, origin: Resource, contact: str) -> None:
        owner = origin.bare
        state = await self._state(owner, contact)
        # RFC 6121 §2.5.2: cancel both directions before the item goes away.
        if state.has_to or state.ask:
            await self._subscription(owner, contact, "unsubscribe", None)
        if state.has_from or state.pending_in:
            await self._subscription(owner, contact, "unsubscribed", None)
        await self.store.drop_sub_request(owner, contact)
        personal = await self.store.delete_item(owner, contact, self._notice(owner, contact))
        if personal is not None:
            await self._push(owner, Item(contact, "", "none", False, ()), personal, remove=True)

    def _notice(self, owner: str, contact: str) -> list[str]:
        return self.host.changes.payloads("roster", owner, [contact])

    async def heard(self, owner: str, contacts: list[str]) -> None:
        """Another node changed `owner`'s items for `contacts` (committed): push them
        as they are now to this node's interested sessions."""
        if not self._interested(owner):
            return
        _ver, items = await self.items(owner)
        for contact in contacts:
            item = items.get(contact)
            if item is None:
                await self._push(owner, Item(contact, "", "none", False, ()), None,
                                 remove=True)
            else:
                await self._push(owner, item, None)

    def _interested(self, owner: str) -> list[Resource]:
        return [r for r in self.router.resources(owner)
                if r.local and r.data.get(INTERESTED)]

    async def _push(self, owner: str, item: Item, personal: int | None,
                    remove: bool = False) -> None:
        """RFC 6121 §2.1.6: push to every resource of `owner` that asked for the roster
        (here: on this node; other nodes push on the change notice, ``heard``)."""
        interested = self._interested(owner)
        if not interested:
            return
        if personal is None:
            ver = await self.version(owner)
        else:
            ver = f"{personal}-{digest(self._shared(owner))}"
        for r in interested:
            iq = Element(ns.IQ, {"type": "set", "id": "push" + secrets.token_hex(4),
                                 "to": r.full})
            query = SubElement(iq, QUERY, {"ver": ver})
            query.append(item_element(item, remove))
            r.deliver(iq)

    # -- subscriptions (RFC 6121 §3) --------------------------------------------------------

    async def _state(self, owner: str, contact: str) -> SubState:
        row = await self.store.roster_item(owner, contact)
        pending = any(c == contact for c, _s in await self.store.sub_requests(owner))
        if row is None:
            return SubState("none", False, pending)
        return SubState(row.subscription, row.ask, pending)

    async def _save(self, owner: str, contact: str, old: SubState, new: SubState,
                    status: str = "") -> None:
        if new.pending_in != old.pending_in:
            if new.pending_in:
                await self.store.add_sub_request(owner, contact, status)
            else:
                await self.store.drop_sub_request(owner, contact)
        if (new.subscription, new.ask) == (old.subscription, old.ask):
            return
        row = await self.store.roster_item(owner, contact)
        name, groups = (row.name, row.groups) if row else ("", ())
        personal = await self.store.put_item(
            owner, RosterRow(contact, name, new.subscription, new.ask, groups),
            self._notice(owner, contact))
        await self._push(owner, Item(contact, name, new.subscription, new.ask, groups), personal)

    def _local(self, bare: str) -> bool:
        return self.host.directory.exists(bare)

    async def on_subscription(self, ev: StanzaEvent) -> bool:
        origin = ev.origin
        assert origin is not None
        ptype = ev.stanza.get("type", "")
        await self._subscription(origin.bare, ev.target, ptype, ev.stanza)
        return True

    async def _subscription(self, user: str, contact: str, ptype: str,
                            stanza: Element | None) -> None:
        """`user` sends `ptype` to `contact`: outbound then (local contact) inbound rules."""
        if contact == user:
            return
        snapshot = self.host.directory.snapshot
        if is_shared_contact(snapshot, user, contact, self.mode):
            if ptype == "subscribe":  # colleagues are always subscribed both ways
                self._deliver_from(contact, user, "subscribed")
                await self.host.bus.fire("presence/share", PresenceShare(contact, user))
            return
        status = (stanza.findtext(ns.q(ns.CLIENT, "status")) or "") if stanza is not None else ""
        old = await self._state(user, contact)
        out = outbound(old, ptype)
        await self._save(user, contact, old, out.state)
        if not out.forward or not self._local(contact):
            return  # no server-to-server: remote contacts never answer
        await self._inbound(contact, user, ptype, status)
        if ptype == "subscribed":  # §3.1.5: the approved contact gets our presence
            await self.host.bus.fire("presence/share", PresenceShare(user, contact))
        elif ptype == "unsubscribed":  # §3.2.2: and loses it
            await self.host.bus.fire("presence/share", PresenceShare(user, contact, False))
        elif ptype == "unsubscribe":  # §3.3.3: the contact's presence stops reaching us
            await self.host.bus.fire("presence/share", PresenceShare(contact, user, False))

    async def _inbound(self, owner: str, sender: str, ptype: str, status: str) -> None:
        old = await self._state(owner, sender)
        result = inbound(old, ptype)
        if result.auto_reply:
            # RFC 6121 §3.1.3: already approved: the server answers for the owner.
            await self._inbound(sender, owner, result.auto_reply, "")
            await self.host.bus.fire("presence/share", PresenceShare(owner, sender))
            return
        await self._save(owner, sender, old, result.state, status)
        if result.forward:
            self._deliver_from(sender, owner, ptype, status)

    def _deliver_from(self, sender: str, owner: str, ptype: str, status: str = "") -> None:
        # RFC 6121 §3.1.2: subscription stanzas carry the sender's bare JID.
        el = Element(ns.PRESENCE, {"type": ptype, "from": sender, "to": owner})
        if status:
            SubElement(el, ns.q(ns.CLIENT, "status")).text = status
        self.router.to_available(owner, el)

    async def on_initial(self, ev: SessionEvent) -> None:
        """RFC 6121 §3.1.3: pending requests are delivered when the contact comes online."""
        session = ev.session
        for contact, status in await self.store.sub_requests(session.bare):
            el = Element(ns.PRESENCE, {"type": "subscribe", "from": contact,
                                       "to": session.bare})
            if status:
                SubElement(el, ns.q(ns.CLIENT, "status")).text = status
            session.deliver(el)

    # -- queries for other features ------------------------------------------------------------

    async def subscribers(self, q: RosterQuery) -> list[str]:
        shared = self._shared(q.owner)
        return list(shared) + [c for c in await self.store.subscribers(q.owner)
                               if c not in shared]

    async def subscriptions(self, q: RosterQuery) -> list[str]:
        _ver, items = await self.items(q.owner)
        return [jid for jid, it in items.items() if it.subscription in ("to", "both")]

    async def subscription(self, q: RosterQuery) -> str:
        if is_shared_contact(self.host.directory.snapshot, q.owner, q.contact, self.mode):
            return "both"
        row = await self.store.roster_item(q.owner, q.contact)
        return row.subscription if row else "none"

    # -- directory changes ---------------------------------------------------------------------

    async def on_directory(self, old: Snapshot, new: Snapshot) -> None:
        """Push shared-item changes to online users (and exchange presence with newcomers)."""
        for owner in self.router.accounts():
            before = shared_items(old, owner, self.mode)
            after = shared_items(new, owner, self.mode)
            if before == after:
                continue
            for jid, it in after.items():
                if before.get(jid) != it:
                    await self._push(owner, Item(jid, it.name, "both", False, (it.group,)),
                                     None)
                    if jid not in before:
                        await self.host.bus.fire("presence/share", PresenceShare(jid, owner))
            for jid in before:
                if jid not in after:
                    row = await self.store.roster_item(owner, jid)
                    if row is not None:
                        await self._push(owner, Item(jid, row.name, row.subscription,
                                                     row.ask, row.groups), None)
                    else:
                        await self._push(owner, Item(jid, "", "none", False, ()), None,
                                         remove=True)


def register(host: Host) -> None:
    roster = Roster(host)
    for scope in ("self",):
        host.bus.on(f"iq/{scope}/get/{QUERY}", roster.on_get)
        host.bus.on(f"iq/{scope}/set/{QUERY}", roster.on_set)
    host.bus.on("presence/subscription", roster.on_subscription)
    host.bus.on("presence/initial", roster.on_initial)
    host.bus.on("roster/subscribers", roster.subscribers)
    host.bus.on("roster/subscriptions", roster.subscriptions)
    host.bus.on("roster/subscription", roster.subscription)
    host.directory.listeners.append(roster.on_directory)
    host.changes.on("roster", roster.heard)
    host.stream_features.add("roster-ver")  # RFC 6121 §2.6.1
