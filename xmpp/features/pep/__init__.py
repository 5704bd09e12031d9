"""Personal Eventing Protocol (XEP-0163) on a minimal XEP-0060 service at each account's
bare JID: publish (auto-create, publish-options preconditions §7.1.5), retract, items,
create, configure, delete, purge; access models open / presence / whitelist; persistent
items with ``max_items`` (``max``); notifications filtered by ``+notify`` entity caps
(XEP-0115, learnt from presence and a disco#info query per new verification string), and
the last item sent when a contact's presence (with caps) arrives (XEP-0163 §6.2).

Explicit XEP-0060 subscriptions are not implemented (``feature-not-implemented``): PEP
clients (OMEMO in Conversations, Dino, Gajim) rely on +notify.

Extension points on the bus (payloads read by attribute, so features need not import
this package; the dataclasses below document the fields):

- ``pep/publish`` ``PepPublish(owner, node, item_id, item, options)``: publish `item`
  (an ``<item/>`` element) on `owner`'s behalf, creating the node with `options`
  (``{"access_model": "whitelist", ...}``, wire values); returns True;
- ``pep/retract`` ``PepItems(owner, node, item_id)``: retract one item; returns True;
- ``pep/items`` ``PepItems(owner, node)``: the node's items as ``<item/>`` elements,
  oldest first (``[]`` when none);
- ``pep/changed`` ``PepChanged(owner, node, item_id, item)``: fired after a publish
  (`item` set) or a retraction (`item` None); handlers return None.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any
from xml.etree.ElementTree import Element, SubElement, fromstring

from ...caps import verification_string
from ...events import PepChanged, RosterQuery
from ...host import Host
from ...proto import ns
from ...proto.errors import StanzaError, error_reply
from ...proto.serializer import to_string
from ...router import IqEvent, Resource, StanzaEvent
from ...stanzas import iq_result
from .node import (
    XDATA,
    OptionError,
    config_form,
    config_of,
    may_read,
    normalise,
    read_form,
    unmet,
)
from .repo import PepRepo

log = logging.getLogger("cxgw.xmpp.pep")

PUBSUB = "http://jabber.org/protocol/pubsub"
EVENT = f"{PUBSUB}#event"
OWNER = f"{PUBSUB}#owner"
ERRORS = f"{PUBSUB}#errors"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
CAPS = "http://jabber.org/protocol/caps"
NOTIFY_KEY = "pep_notify"   # Resource.data: frozenset of nodes the session wants (+notify)
CAPS_CACHE_MAX = 4096
ITEMS_MAX = 1000            # items returned by one request at most

#: What works, advertised on the server and on accounts (XEP-0060 §10).
FEATURES = tuple(f"{PUBSUB}#{f}" for f in (
    "publish", "publish-options", "retract-items", "retrieve-items", "auto-create",
    "auto-subscribe", "filtered-notifications", "last-published", "create-nodes",
    "config-node", "delete-nodes", "purge-nodes", "persistent-items", "item-ids",
    "multi-items", "access-open", "access-presence", "access-whitelist",
    "create-and-configure"))





def _t(namespace: str, local: str) -> str:
    return f"{{{namespace}}}{local}"


# XEP-0086 §3: the legacy numeric code beside each condition. Clients still read it:
# profanity publishes its OMEMO device list only after an error with code="404" for its
# own (empty) node.
LEGACY_CODES = {"bad-request": "400", "not-authorized": "401", "forbidden": "403",
                "item-not-found": "404", "not-allowed": "405", "not-acceptable": "406",
                "conflict": "409", "internal-server-error": "500",
                "feature-not-implemented": "501", "service-unavailable": "503",
                "resource-constraint": "500", "policy-violation": "406"}


def pubsub_error(stanza: Element, condition: str, app: str | None = None,
                 feature: str | None = None, text: str | None = None) -> Element:
    """An error reply with a pubsub-specific condition (XEP-0060 §7.1.3 and others) and
    its legacy code (XEP-0086)."""
    reply = error_reply(stanza, StanzaError(condition, text))
    err = reply.find(ns.ERROR)
    if err is not None and condition in LEGACY_CODES:
        err.set("code", LEGACY_CODES[condition])
    if app is not None and err is not None:
        el = SubElement(err, _t(ERRORS, app))
        if feature:
            el.set("feature", feature)
    return reply


class PepError(Exception):
    def __init__(self, condition: str, app: str | None = None, feature: str | None = None,
                 text: str | None = None) -> None:
        super().__init__(condition)
        self.args4 = (condition, app, feature, text)


def _payload_of(item: Element) -> str:
    return "".join(to_string(child, ns.CLIENT) for child in item)


def item_element(namespace: str, item_id: str, payload: str) -> Element:
    """``<item id=...>payload</item>`` in `namespace` (pubsub or pubsub#event)."""
    holder = fromstring(f"<item xmlns='{ns.CLIENT}'>{payload}</item>")
    el = Element(_t(namespace, "item"), {"id": item_id})
    el.extend(list(holder))
    return el


class Pep:
    def __init__(self, host: Host, repo: PepRepo) -> None:
        self.host = host
        self.router = host.router
        self.repo = repo
        self.caps: dict[str, frozenset[str]] = {}        # verification string → nodes
        self.asked: dict[str, tuple[Resource, str, str]] = {}  # iq id → (session, node, ver)

    # -- who may read, who is told ----------------------------------------------------------

    async def _subscribed(self, owner: str, requester: str) -> bool:
        state = await self.host.bus.fire("roster/subscription", RosterQuery(owner, requester))
        return state in ("from", "both")

    async def _check_read(self, owner: str, requester: str, config: dict[str, Any]) -> None:
        model = config_of(config)["access_model"]
        subscribed = model == "presence" and requester != owner and \
            await self._subscribed(owner, requester)
        if may_read(model, owner, requester, subscribed):
            return
        if model == "presence":
            raise PepError("not-authorized", "presence-subscription-required")
        raise PepError("not-allowed", "closed-node")

    async def _recipients(self, owner: str, node: str, config: dict[str, Any]) -> list[Resource]:
        """Available resources wanting `node` (+notify) that may read it (XEP-0163 §4.3)."""
        bares = [owner]
        if config_of(config)["access_model"] != "whitelist":
            subs = await self.host.bus.fire("roster/subscribers", RosterQuery(owner)) or []
            bares += [b for b in subs if b != owner]
        out = []
        for bare in bares:
            for r in self.router.available_resources(bare):
                if node in r.data.get(NOTIFY_KEY, ()):
                    out.append(r)
        return out

    async def _notify(self, owner: str, node: str, config: dict[str, Any],
                      child: Element) -> None:
        full = config_of(config)
        if not full["deliver_notifications"]:
            return
        targets = await self._recipients(owner, node, config)
        for r in targets:
            r.deliver(self._event(owner, r.full, child))

    @staticmethod
    def _event(owner: str, to: str, child: Element) -> Element:
        msg = Element(ns.MESSAGE, {"from": owner, "to": to, "type": "headline",
                                   "id": secrets.token_hex(6)})
        SubElement(msg, _t(EVENT, "event")).append(child)
        return msg

    # -- iq handlers ------------------------------------------------------------------------

    async def on_set(self, ev: IqEvent) -> Element:
        try:
            return await self._set(ev)
        except PepError as exc:
            return pubsub_error(ev.stanza, *exc.args4)

    async def _set(self, ev: IqEvent) -> Element:
        pubsub = ev.stanza[0]
        if ev.target != ev.origin.bare:
            raise PepError("forbidden")  # only the owner writes to a PEP service
        publish = pubsub.find(_t(PUBSUB, "publish"))
        if publish is not None:
            return await self._publish(ev, pubsub, publish)
        retract = pubsub.find(_t(PUBSUB, "retract"))
        if retract is not None:
            return await self._retract(ev, retract)
        create = pubsub.find(_t(PUBSUB, "create"))
        if create is not None:
            return await self._create(ev, pubsub, create)
        for op in ("subscribe", "unsubscribe", "options"):
            if pubsub.find(_t(PUBSUB, op)) is not None:
                raise PepError("feature-not-implemented", "unsupported", "subscribe")
        raise PepError("bad-request")

    async def _publish(self, ev: IqEvent, pubsub: Element, publish: Element) -> Element:
        node = publish.get("node") or ""
        if not node:
            raise PepError("bad-request", "nodeid-required")
        items = publish.findall(_t(PUBSUB, "item"))
        if len(items) != 1:
            raise PepError("bad-request", "item-required" if not items else "invalid-payload")
        item = items[0]
        if len(item) != 1:
            raise PepError("bad-request", "payload-required" if not len(item)
                           else "invalid-payload")
        x = pubsub.find(f"{_t(PUBSUB, 'publish-options')}/{_t(XDATA, 'x')}")
        try:
            wanted = read_form(x)
        except OptionError as exc:
            # XEP-0060 §7.1.5.3: an option the service cannot honour
            raise PepError("conflict", "precondition-not-met", text=str(exc)) from None
        item_id = item.get("id") or secrets.token_hex(8)
        await self.publish(ev.origin.bare, node, item_id, item, wanted)
        out = Element(_t(PUBSUB, "pubsub"))
        SubElement(SubElement(out, _t(PUBSUB, "publish"), {"node": node}),
                   _t(PUBSUB, "item"), {"id": item_id})
        return iq_result(ev.stanza, out)

    async def publish(self, owner: str, node: str, item_id: str, item: Element,
                      wanted: dict[str, Any]) -> None:
        """Store, notify, fire ``pep/changed``. Raises PepError on unmet preconditions."""
        config = await self.repo.node(owner, node)
        if config is None:
            config = config_of(wanted)
            if not await self.repo.create(owner, node, config):
                config = await self.repo.node(owner, node) or config
        if unmet(config, wanted):
            raise PepError("conflict", "precondition-not-met")  # XEP-0060 §7.1.5.2
        payload = _payload_of(item)
        full = config_of(config)
        await self.repo.publish(owner, node, item_id, payload, int(full["max_items"]))
        items = Element(_t(EVENT, "items"), {"node": node})
        if full["deliver_payloads"]:
            items.append(item_element(EVENT, item_id, payload))
        else:
            SubElement(items, _t(EVENT, "item"), {"id": item_id})
        await self._notify(owner, node, config, items)
        await self.host.bus.fire("pep/changed", PepChanged(
            owner, node, item_id, item_element(PUBSUB, item_id, payload)))

    async def _retract(self, ev: IqEvent, retract: Element) -> Element:
        node = retract.get("node") or ""
        if not node:
            raise PepError("bad-request", "nodeid-required")
        item = retract.find(_t(PUBSUB, "item"))
        if item is None or not item.get("id"):
            raise PepError("bad-request", "item-required")
        notify = retract.get("notify") in ("1", "true")
        await self.retract(ev.origin.bare, node, item.get("id") or "", notify)
        return iq_result(ev.stanza)

    async def retract(self, owner: str, node: str, item_id: str, notify: bool) -> None:
        config = await self.repo.node(owner, node)
        if config is None:
            raise PepError("item-not-found")
        if not await self.repo.retract(owner, node, item_id):
            raise PepError("item-not-found")
        if notify or config_of(config)["notify_retract"]:
            items = Element(_t(EVENT, "items"), {"node": node})
            SubElement(items, _t(EVENT, "retract"), {"id": item_id})
            await self._notify(owner, node, config, items)
        await self.host.bus.fire("pep/changed", PepChanged(owner, node, item_id, None))

    async def _create(self, ev: IqEvent, pubsub: Element, create: Element) -> Element:
        node = create.get("node") or ""
        if not node:
            raise PepError("not-acceptable", "nodeid-required")  # no instant nodes in PEP
        x = pubsub.find(f"{_t(PUBSUB, 'configure')}/{_t(XDATA, 'x')}")
        try:
            wanted = read_form(x)
        except OptionError as exc:
            raise PepError("not-acceptable", "unsupported-access-model"
                           if exc.field == "access_model" else None, text=str(exc)) from None
        if not await self.repo.create(ev.origin.bare, node, config_of(wanted)):
            raise PepError("conflict")
        return iq_result(ev.stanza)

    async def on_get(self, ev: IqEvent) -> Element:
        try:
            return await self._get(ev)
        except PepError as exc:
            return pubsub_error(ev.stanza, *exc.args4)

    async def _get(self, ev: IqEvent) -> Element:
        pubsub = ev.stanza[0]
        items_el = pubsub.find(_t(PUBSUB, "items"))
        if items_el is None:
            if pubsub.find(_t(PUBSUB, "subscriptions")) is not None or \
                    pubsub.find(_t(PUBSUB, "affiliations")) is not None:
                raise PepError("feature-not-implemented", "unsupported", "retrieve-subscriptions")
            raise PepError("bad-request")
        node = items_el.get("node") or ""
        if not node:
            raise PepError("bad-request", "nodeid-required")
        config = await self.repo.node(ev.target, node)
        if config is None:
            raise PepError("item-not-found")
        await self._check_read(ev.target, ev.origin.bare, config)
        ids = [i.get("id") or "" for i in items_el.findall(_t(PUBSUB, "item"))]
        limit_text = items_el.get("max_items") or ""
        limit = int(limit_text) if limit_text.isdigit() and int(limit_text) > 0 else ITEMS_MAX
        found = await self.repo.items(ev.target, node, None if ids else min(limit, ITEMS_MAX),
                                      ids or None)
        out = Element(_t(PUBSUB, "pubsub"))
        holder = SubElement(out, _t(PUBSUB, "items"), {"node": node})
        for item_id, payload in reversed(found):  # oldest first (XEP-0060 §6.5.7)
            holder.append(item_element(PUBSUB, item_id, payload))
        return iq_result(ev.stanza, out)

    async def on_owner(self, ev: IqEvent) -> Element:
        try:
            return await self._owner(ev)
        except PepError as exc:
            return pubsub_error(ev.stanza, *exc.args4)

    async def _owner(self, ev: IqEvent) -> Element:
        if ev.target != ev.origin.bare:
            raise PepError("forbidden")
        owner = ev.origin.bare
        pubsub = ev.stanza[0]
        op = pubsub[0] if len(pubsub) else None
        if op is None:
            raise PepError("bad-request")
        node = op.get("node") or ""
        if not node:
            raise PepError("bad-request", "nodeid-required")
        config = await self.repo.node(owner, node)
        if config is None:
            raise PepError("item-not-found")
        kind, get = op.tag, ev.stanza.get("type") == "get"
        if kind == _t(OWNER, "configure"):
            if get:
                out = Element(_t(OWNER, "pubsub"))
                SubElement(out, _t(OWNER, "configure"), {"node": node}).append(
                    config_form(config))
                return iq_result(ev.stanza, out)
            x = op.find(_t(XDATA, "x"))
            if x is None or x.get("type") == "cancel":
                return iq_result(ev.stanza)
            try:
                changes = read_form(x)
            except OptionError as exc:
                raise PepError("not-acceptable", text=str(exc)) from None
            await self.repo.configure(owner, node, {**config_of(config), **changes})
            return iq_result(ev.stanza)
        if get:
            raise PepError("feature-not-implemented", "unsupported", "manage-subscriptions")
        if kind == _t(OWNER, "delete"):
            recipients = await self._recipients(owner, node, config)
            await self.repo.delete(owner, node)
            for r in recipients:  # XEP-0060 §8.4.2
                r.deliver(self._event(owner, r.full, Element(_t(EVENT, "delete"),
                                                             {"node": node})))
            await self.host.bus.fire("pep/changed", PepChanged(owner, node, "", None))
            return iq_result(ev.stanza)
        if kind == _t(OWNER, "purge"):
            for item_id, _ in await self.repo.items(owner, node):
                await self.repo.retract(owner, node, item_id)
            await self._notify(owner, node, config, Element(_t(EVENT, "purge"), {"node": node}))
            await self.host.bus.fire("pep/changed", PepChanged(owner, node, "", None))
            return iq_result(ev.stanza)
        raise PepError("feature-not-implemented", "unsupported", "manage-subscriptions")

    # -- extension points for other features ---------------------------------------------------

    async def account_items(self, ev: IqEvent) -> list[tuple[str, str]]:
        """``disco/account/items``: the account's PEP nodes the requester may read, as
        (jid, node) pairs (XEP-0060 §5.2, XEP-0163 §7)."""
        out: list[tuple[str, str]] = []
        for node in sorted(await self.repo.nodes(ev.target)):
            config = await self.repo.node(ev.target, node)
            if config is None:
                continue
            try:
                await self._check_read(ev.target, ev.origin.bare, config)
            except PepError:
                continue
            out.append((ev.target, node))
        return out

    async def ext_publish(self, ev: Any) -> bool:
        try:
            wanted = {k: normalise(k, v) for k, v in dict(ev.options).items()}
        except OptionError:
            log.warning("pep/publish with unsupported options %r", ev.options)
            return False
        try:
            await self.publish(ev.owner, ev.node, ev.item_id, ev.item, wanted)
        except PepError:
            # The node exists with other options: the owner configured it; keep theirs.
            config = await self.repo.node(ev.owner, ev.node) or {}
            await self.publish(ev.owner, ev.node, ev.item_id, ev.item,
                               {k: v for k, v in config.items() if k in wanted})
        return True

    async def ext_retract(self, ev: Any) -> bool:
        try:
            await self.retract(ev.owner, ev.node, ev.item_id, True)
        except PepError:
            return False
        return True

    async def ext_items(self, ev: Any) -> list[Element]:
        found = await self.repo.items(ev.owner, ev.node, ITEMS_MAX,
                                      [ev.item_id] if ev.item_id else None)
        return [item_element(PUBSUB, i, p) for i, p in reversed(found)]

    # -- +notify from entity caps (XEP-0115, XEP-0163 §4.3) -------------------------------

    async def on_presence(self, ev: StanzaEvent) -> None:
        """Watch available presence for caps; returns None (presence goes on)."""
        session = ev.origin
        if session is None or ev.stanza.get("type") is not None:
            return None
        c = ev.stanza.find(_t(CAPS, "c"))
        if c is None or not c.get("ver"):
            if NOTIFY_KEY not in session.data:
                session.data[NOTIFY_KEY] = frozenset()
            return None
        ver, node = c.get("ver") or "", c.get("node") or ""
        if session.data.get("pep_ver") == ver:
            return None
        session.data["pep_ver"] = ver
        known = self.caps.get(ver)
        if known is not None:
            self.host.spawn(self._interests(session, known))
            return None
        qid = f"pep-caps-{secrets.token_hex(6)}"
        self.asked[qid] = (session, node, ver)
        if len(self.asked) > CAPS_CACHE_MAX:
            self.asked.pop(next(iter(self.asked)))
        iq = Element(ns.IQ, {"type": "get", "id": qid, "from": self.host.domain,
                             "to": session.full})
        SubElement(iq, _t(DISCO_INFO, "query"), {"node": f"{node}#{ver}"})
        session.deliver(iq)
        return None

    def on_iq_response(self, stanza: Element, origin: Resource) -> bool | None:
        """Sync hook ``iq/host/response``: the answer to our disco#info query."""
        asked = self.asked.pop(stanza.get("id") or "", None)
        if asked is None:
            return None
        session, _node, ver = asked
        if session is not origin or stanza.get("type") != "result":
            return True
        query = stanza.find(_t(DISCO_INFO, "query"))
        features = [f.get("var") or "" for f in query.iter(_t(DISCO_INFO, "feature"))] \
            if query is not None else []
        identities = [(i.get("category") or "", i.get("type") or "", i.get("name") or "")
                      for i in query.iter(_t(DISCO_INFO, "identity"))] \
            if query is not None else []
        wanted = frozenset(f[:-7] for f in features if f.endswith("+notify"))
        # XEP-0115 §5.4: cache under the verification string only when it checks out
        # (forms in the answer would change the string; such answers count for this session).
        if query is not None and query.find(_t(XDATA, "x")) is None and \
                verification_string(identities, features) == ver:
            if len(self.caps) >= CAPS_CACHE_MAX:
                self.caps.clear()
            self.caps[ver] = wanted
        self.host.spawn(self._interests(session, wanted))
        return True

    async def _interests(self, session: Resource, wanted: frozenset[str]) -> None:
        """The session's +notify set is known: send the last item of each node it wants
        from its own account and every contact it has a presence subscription to."""
        before = session.data.get(NOTIFY_KEY, frozenset())
        session.data[NOTIFY_KEY] = wanted
        if wanted != before:
            self.router.changed(session)  # other nodes notify it too (issue 14)
        new = sorted(wanted - before) if before else sorted(wanted)
        if not new or self.router.session(session.full) is not session:
            return
        owners = [session.bare]
        contacts = await self.host.bus.fire("roster/subscriptions", RosterQuery(session.bare))
        owners += [c for c in contacts or () if c != session.bare]
        for owner, node, config, item_id, payload in await self.repo.last_items(owners, new):
            full = config_of(config)
            if full["send_last_published_item"] != "on_sub_and_presence":
                continue
            if full["access_model"] == "whitelist" and owner != session.bare:
                continue
            items = Element(_t(EVENT, "items"), {"node": node})
            items.append(item_element(EVENT, item_id, payload))
            session.deliver(self._event(owner, session.full, items))


def register(host: Host) -> None:
    p = Pep(host, host.stores.pep)
    host.router.shared_keys.add(NOTIFY_KEY)
    host.bus.on(f"iq/self/set/{_t(PUBSUB, 'pubsub')}", p.on_set)
    host.bus.on(f"iq/bare/set/{_t(PUBSUB, 'pubsub')}", p.on_set)
    for scope in ("self", "bare"):
        host.bus.on(f"iq/{scope}/get/{_t(PUBSUB, 'pubsub')}", p.on_get)
    for kind in ("get", "set"):
        host.bus.on(f"iq/self/{kind}/{_t(OWNER, 'pubsub')}", p.on_owner)
    host.bus.on("presence/broadcast", p.on_presence, priority=100)
    host.hooks.on("iq/host/response", p.on_iq_response)
    host.bus.on("disco/account/items", p.account_items)
    host.bus.on("pep/publish", p.ext_publish)
    host.bus.on("pep/retract", p.ext_retract)
    host.bus.on("pep/items", p.ext_items)
    host.add_identity("pubsub", "pep")
    host.add_identity("pubsub", "pep", account=True)  # clients (Conversations) look here
    for feature in (PUBSUB, *FEATURES):
        host.add_feature(feature, account=True)
