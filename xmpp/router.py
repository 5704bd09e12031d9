"""Stanza routing between local sessions (RFC 6121 §8) and the table of bound sessions.

``Router.route`` is called synchronously for every stanza a bound client sends. Messages
and directed presence between connected users never leave this module's fast path: a
dict lookup, the ``stanza/inbound`` hook (blocking), one serialisation, a buffered write
per recipient. Anything that needs the database or a feature goes through the origin
session's ordered async lane (``Resource.run``) and the process EventBus:

- ``iq/self/<type>/<payload tag>``: an iq get/set with no 'to' or to the sender's own bare
  JID (RFC 6120 §10.3.3: handled by the server on behalf of the account);
- ``iq/host/<type>/<payload tag>``: an iq to the server's domain;
- ``iq/bare/<type>/<payload tag>``: an iq to another local account's bare JID
  (RFC 6121 §8.5.2.1.3: the server answers on the account's behalf);
  handlers get an ``IqEvent`` and return the reply Element, True (answered themselves) or
  None (next handler; nobody: ``service-unavailable``, RFC 6120 §8.4), or raise StanzaError;
- ``presence/broadcast``: available/unavailable presence with no 'to' (RFC 6121 §4.2, §4.4);
- ``presence/subscription``: subscribe, subscribed, unsubscribe, unsubscribed (§3);
- ``presence/probe``: a probe from a client (§4.3);
- ``message/offline/handle``: a message for an account with no available resource
  (§8.5.2.1.1); return True when stored; nobody: ``service-unavailable``;
- ``iq/host/response`` (sync hook) ``(stanza, origin)``: an iq result/error to the
  server's domain, i.e. the answer to an iq a feature sent; return non-None when handled;
- ``session/bound``, ``session/closed``: ``SessionEvent`` after bind and after the stream
  ended (presence feature sends unavailable on the session's behalf, §4.5.2).

The sessions table (issue 14 item 6) is one map with two sides, each behind an interface:

- ``SessionMap`` is what features and drivers read: ``resources``, ``available_resources``,
  ``session``, ``accounts``, ``count``. It answers for every session of every node, so a
  feature needs no change to reach a session elsewhere.
- The local side: the driver's connections (``Resource.local`` is True), entered with
  ``bind``/``unbind``/``changed`` (and ``registered`` to wait for other nodes to see it).
- The PostgreSQL-backed side: ``Router.remote`` (``RemoteSessions``, implemented by
  ``xmpp.cluster.Cluster``) hears every local bind, unbind and presence change and writes
  it to the ``xmpp_sessions`` registry; in return it enters other nodes' sessions as
  proxies (``xmpp.cluster.RemoteResource``, ``local`` False) with ``put_proxy`` /
  ``drop_proxy`` and lists them with ``proxies``. A proxy's ``deliver_bytes`` hands the
  stanza to the owning node; its ``data`` is a copy of the owner's ``shared_keys``.

Without a node identity (unit tests, one process) ``remote`` is None and the map is local
only. ``Router.sessions`` is the map's storage, read directly only where a per-stanza
dict lookup matters (routing, carbons); nothing outside this module and the cluster
writes it.
Components (later: MUC at ``conference.<domain>``, XEP-0114): ``Router.components`` maps
a domain to a handler that receives every stanza addressed to it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from xml.etree.ElementTree import Element

from cxkernel.events import EventBus

from .hooks import Hooks
from .jid import JID, JIDError, parse_jid
from .proto import ns
from .proto.errors import StanzaError, StreamError, error_reply
from .proto.serializer import to_bytes

log = logging.getLogger("cxgw.xmpp.router")

MESSAGE, PRESENCE, IQ = ns.MESSAGE, ns.PRESENCE, ns.IQ


class Resource:
    """A bound session as routing sees it: address, presence state and output.

    The connection class of the driver (and fakes in tests) subclass it and implement
    ``deliver_bytes``, ``run`` and ``close_stream``.
    """

    __slots__ = ("jid", "full", "bare", "resource", "priority", "available", "presence",
                 "directed", "data")

    local = True  # a session of this process (False: a proxy of another node's session)

    def __init__(self) -> None:
        self.jid: JID | None = None
        self.full = ""
        self.bare = ""
        self.resource = ""
        self.priority = 0
        self.available = False          # sent initial presence (RFC 6121 §4.2)
        self.presence: Element | None = None  # last broadcast available presence
        self.directed: set[str] | None = None  # JIDs that got directed presence (§4.6)
        self.data: dict[str, Any] = {}  # per-session state of feature modules

    def set_jid(self, jid: JID) -> None:
        self.jid = jid
        self.full = str(jid)
        self.bare = str(jid.bare)
        self.resource = jid.resource

    def deliver(self, stanza: Element) -> None:
        self.deliver_bytes(to_bytes(stanza))

    def deliver_bytes(self, data: bytes) -> None:
        raise NotImplementedError

    def run(self, job: Callable[[], Awaitable[object]]) -> None:
        """Run `job` after the async work this session already queued (ordered lane)."""
        raise NotImplementedError

    def close_stream(self, error: StreamError | None) -> None:
        raise NotImplementedError


@dataclass(frozen=True, slots=True, eq=False)
class IqEvent:
    """An iq get/set for a feature: `target` is the bare JID it is about (self or other)."""

    stanza: Element
    origin: Resource
    target: str


@dataclass(frozen=True, slots=True, eq=False)
class StanzaEvent:
    """A presence or message stanza handed to a feature; `target` is its bare 'to'."""

    stanza: Element
    origin: Resource | None
    target: str


@dataclass(frozen=True, slots=True, eq=False)
class SessionEvent:
    """A session was bound or has ended."""

    session: Resource


class RemoteSessions(Protocol):
    """The PostgreSQL-backed side of the sessions table (``xmpp.cluster.Cluster``): told of
    every local bind, unbind and presence change so other nodes see them."""

    def bound(self, session: Resource) -> None: ...

    def unbound(self, session: Resource) -> None: ...

    def changed(self, session: Resource) -> None: ...

    def registered(self, session: Resource) -> Awaitable[None] | None: ...

    def stored_offline(self, bare: str) -> None: ...

    def resume_tag(self) -> str:
        """Names this node inside an XEP-0198 resumption id."""
        ...

    async def resume_elsewhere(self, previd: str, owner: str, h: int) -> None:
        """A `<resume/>` for a session this node does not hold (XEP-0198 §5)."""
        ...


class SessionMap(Protocol):
    """The sessions table as features read it: local sessions and other nodes' proxies."""

    def resources(self, bare: str) -> list[Resource]: ...

    def available_resources(self, bare: str) -> list[Resource]: ...

    def session(self, full: str) -> Resource | None: ...

    def accounts(self) -> list[str]: ...

    def count(self) -> int: ...


class Router:
    """The sessions table (bare JID → resource → session; a ``SessionMap``) and RFC 6121
    §8 routing."""

    def __init__(self, domain: str, bus: EventBus, hooks: Hooks,
                 account_exists: Callable[[str], bool]) -> None:
        self.domain = domain
        self.bus = bus
        self.hooks = hooks
        self.account_exists = account_exists
        self.sessions: dict[str, dict[str, Resource]] = {}
        self.remote: RemoteSessions | None = None
        # The session whose stanza is being routed now (a failed hand-off to another node
        # answers it: offline storage or an error, never silence).
        self.current_origin: Resource | None = None
        self.components: dict[str, Callable[[Element, Resource], None]] = {}
        # Resource.data keys other nodes need in their proxies (carbons on, PEP +notify);
        # a feature changing one calls ``changed(session)``.
        self.shared_keys: set[str] = set()
        self.routed = 0

    # -- the sessions table -----------------------------------------------------------------

    def bind(self, session: Resource, jid: JID) -> None:
        """Add `session` as `jid`. RFC 6120 §7.7.2.2: the new session wins; the old one
        with the same resource gets a ``conflict`` stream error."""
        resources = self.sessions.setdefault(str(jid.bare), {})
        old = resources.get(jid.resource)
        session.set_jid(jid)
        resources[jid.resource] = session
        if old is not None and old is not session:
            old.data["replaced"] = True
            # a proxy passes the conflict on to the node that holds the old session
            old.close_stream(StreamError("conflict", "Replaced by new connection"))
        if self.remote is not None and session.local:
            self.remote.bound(session)

    def unbind(self, session: Resource) -> bool:
        """Remove `session`; False when it was not (or no longer) in the table."""
        resources = self.sessions.get(session.bare)
        if not resources or resources.get(session.resource) is not session:
            return False
        del resources[session.resource]
        if not resources:
            del self.sessions[session.bare]
        if self.remote is not None and session.local:
            self.remote.unbound(session)
        return True

    def registered(self, session: Resource) -> Awaitable[None] | None:
        """Done when every node can route to the just-bound `session` (None: now)."""
        if self.remote is not None and session.local:
            return self.remote.registered(session)
        return None

    def changed(self, session: Resource) -> None:
        """Presence (priority, availability) of a local session changed."""
        if self.remote is not None and session.local:
            self.remote.changed(session)

    def put_proxy(self, session: Resource) -> None:
        """Enter another node's session (no conflict handling: the registry decides)."""
        self.sessions.setdefault(session.bare, {})[session.resource] = session

    def drop_proxy(self, session: Resource) -> None:
        resources = self.sessions.get(session.bare)
        if resources and resources.get(session.resource) is session:
            del resources[session.resource]
            if not resources:
                del self.sessions[session.bare]

    def resources(self, bare: str) -> list[Resource]:
        return list(self.sessions.get(bare, {}).values())

    def available_resources(self, bare: str) -> list[Resource]:
        return [r for r in self.sessions.get(bare, {}).values() if r.available]

    def session(self, full: str) -> Resource | None:
        bare, _, resource = full.partition("/")
        return self.sessions.get(bare, {}).get(resource)

    def accounts(self) -> list[str]:
        """Bare JIDs with a session on any node."""
        return list(self.sessions)

    def proxies(self, node: str | None = None) -> list[Resource]:
        """Other nodes' sessions (of `node` only, when given) — the PostgreSQL-backed side."""
        return [r for rs in self.sessions.values() for r in rs.values()
                if not r.local and (node is None or getattr(r, "node", None) == node)]

    def count(self) -> int:
        """Sessions bound on this node."""
        return sum(1 for rs in self.sessions.values() for r in rs.values() if r.local)

    # -- delivery helpers for features ---------------------------------------------------------

    def to_available(self, bare: str, stanza: Element) -> int:
        """Deliver to every available resource of `bare` (one serialisation)."""
        targets = [r for r in self.sessions.get(bare, {}).values() if r.available]
        if targets:
            data = to_bytes(stanza)
            for r in targets:
                r.deliver_bytes(data)
        return len(targets)

    def to_full(self, full: str, stanza: Element) -> bool:
        target = self.session(full)
        if target is None:
            return False
        target.deliver(stanza)
        return True

    # -- routing -------------------------------------------------------------------------------

    def route(self, stanza: Element, origin: Resource) -> None:
        """Route a stanza from a bound client ('from' stamped, 'to' normalised)."""
        self.current_origin = origin
        try:
            self._route(stanza, origin)
        finally:
            self.current_origin = None

    def _route(self, stanza: Element, origin: Resource) -> None:
        to = stanza.get("to")
        tag = stanza.tag
        if to is None or to == origin.bare:
            self._to_self(stanza, origin, tag, to)
            return
        if to == self.domain:
            self._to_host(stanza, origin, tag)
            return
        try:
            jid = parse_jid(to)
        except JIDError:
            _bounce(stanza, origin, StanzaError("jid-malformed"))
            return
        if jid.domain != self.domain:
            component = self.components.get(jid.domain)
            if component is not None:
                component(stanza, origin)
                return
            # No server-to-server yet: RFC 6120 §10.4.3 remote-server-not-found.
            _bounce(stanza, origin, StanzaError("remote-server-not-found"))
            return
        if not jid.local:
            # A resource of our own domain ("domain/res"): nothing lives there.
            _bounce(stanza, origin, StanzaError("service-unavailable"))
            return
        bare = to if not jid.resource else to.partition("/")[0]
        if tag == MESSAGE:
            self._message(stanza, origin, bare, jid.resource)
        elif tag == PRESENCE:
            self._presence(stanza, origin, bare, jid.resource)
        else:
            self._iq(stanza, origin, bare, jid.resource)

    def _inbound_refused(self, stanza: Element, origin: Resource, bare: str) -> bool:
        hooks = self.hooks.handlers("stanza/inbound")
        if not hooks:
            return False
        for handler in hooks:
            if handler(stanza, origin, bare) is not None:
                return True
        return False

    def _message(self, stanza: Element, origin: Resource, bare: str, resource: str) -> None:
        if not self.account_exists(bare):
            _bounce(stanza, origin, StanzaError("service-unavailable"))  # RFC 6121 §8.5.1
            return
        if self._inbound_refused(stanza, origin, bare):
            return
        mtype = stanza.get("type", "normal")
        resources = self.sessions.get(bare)
        if resource:
            target = resources.get(resource) if resources else None
            if target is not None:  # RFC 6121 §8.5.3.1: exact match
                target.deliver(stanza)
                self.routed += 1
                self._routed(stanza, origin, bare, [target])
                return
            if mtype == "groupchat":  # RFC 6121 §8.5.3.2.1
                _bounce(stanza, origin, StanzaError("service-unavailable"))
                return
            if mtype == "error":
                return
            # RFC 6121 §8.5.3.2.1: normal, chat and headline are treated as to the bare JID.
        if mtype == "error":
            return  # RFC 6121 §8.5.2.1.1: an error to the bare JID is silently ignored
        if mtype == "groupchat":
            _bounce(stanza, origin, StanzaError("service-unavailable"))
            return
        targets: list[Resource] = []
        if resources:
            top = -129
            for r in resources.values():
                if r.available and r.priority >= 0:
                    targets.append(r)
                    top = max(top, r.priority)
            # RFC 6121 §8.5.2.1.1: normal goes to the highest-priority resource(s); chat
            # and headline MAY go to every non-negative resource (we do, so every device
            # sees the conversation).
            if mtype == "normal" and len(targets) > 1:
                targets = [r for r in targets if r.priority == top]
        if targets:
            data = to_bytes(stanza)
            for r in targets:
                r.deliver_bytes(data)
            self.routed += 1
            self._routed(stanza, origin, bare, targets)
            return
        if mtype == "headline":
            return  # RFC 6121 §8.5.2.2.1: headline to nobody is silently ignored
        self._routed(stanza, origin, bare, targets)
        origin.run(lambda: self.offline(stanza, origin, bare))

    def _routed(self, stanza: Element, origin: Resource, bare: str,
                delivered: list[Resource]) -> None:
        for handler in self.hooks.handlers("message/routed"):
            if handler(stanza, origin, bare, delivered) is not None:
                return

    async def offline(self, stanza: Element, origin: Resource, bare: str) -> None:
        """Offline storage for a message nobody took (bounced when storage refuses)."""
        try:
            stored = await self.bus.fire("message/offline/handle",
                                         StanzaEvent(stanza, origin, bare))
        except StanzaError as exc:  # e.g. resource-constraint: storage away (issue 13)
            _bounce(stanza, origin, exc)
            return
        if not stored:
            _bounce(stanza, origin, StanzaError("service-unavailable"))  # RFC 6121 §8.5.2.2.1
        elif self.remote is not None:
            self.remote.stored_offline(bare)  # the account may have come online elsewhere

    def _presence(self, stanza: Element, origin: Resource, bare: str, resource: str) -> None:
        ptype = stanza.get("type")
        if ptype in ("subscribe", "subscribed", "unsubscribe", "unsubscribed"):
            ev = StanzaEvent(stanza, origin, bare)
            origin.run(lambda: self.bus.fire("presence/subscription", ev))
            return
        if not self.account_exists(bare):
            return  # RFC 6121 §8.5.1: presence to a non-existent account is ignored
        if self._inbound_refused(stanza, origin, bare):
            return
        if ptype == "probe":
            ev = StanzaEvent(stanza, origin, bare)
            origin.run(lambda: self.bus.fire("presence/probe", ev))
            return
        if ptype is None or ptype == "unavailable":
            # RFC 6121 §4.6: directed presence; remember it for the unavailable broadcast.
            directed = origin.directed
            if ptype is None:
                if directed is None:
                    origin.directed = directed = set()
                directed.add(stanza.get("to", bare))
            elif directed:
                directed.discard(stanza.get("to", bare))
        if resource:
            target = self.session(f"{bare}/{resource}")
            if target is not None:
                target.deliver(stanza)  # RFC 6121 §8.5.3.1
            return  # §8.5.3.2.3: presence to an unknown full JID is ignored
        if ptype == "error":
            return
        self.to_available(bare, stanza)  # RFC 6121 §8.5.2.1.2

    def _iq(self, stanza: Element, origin: Resource, bare: str, resource: str) -> None:
        itype = stanza.get("type")
        if not self.account_exists(bare):
            if itype in ("get", "set"):
                _bounce(stanza, origin, StanzaError("service-unavailable"))  # §8.5.1
            return
        if self._inbound_refused(stanza, origin, bare):
            return
        if resource:
            target = self.session(f"{bare}/{resource}")
            if target is not None:
                target.deliver(stanza)
            elif itype in ("get", "set"):
                _bounce(stanza, origin, StanzaError("service-unavailable"))  # §8.5.3.2.2
            return
        if itype in ("get", "set"):
            # RFC 6121 §8.5.2.1.3: an iq to a bare JID is answered by the server.
            origin.run(lambda: self.handle_iq(stanza, origin, "bare", bare))

    def _to_self(self, stanza: Element, origin: Resource, tag: str, to: str | None) -> None:
        if tag == IQ:
            if stanza.get("type") in ("get", "set"):
                origin.run(lambda: self.handle_iq(stanza, origin, "self", origin.bare))
        elif tag == PRESENCE:
            ptype = stanza.get("type")
            if to is None and (ptype is None or ptype == "unavailable"):
                ev = StanzaEvent(stanza, origin, origin.bare)
                origin.run(lambda: self.bus.fire("presence/broadcast", ev))
            elif to is not None:
                self._presence(stanza, origin, origin.bare, "")
        elif to is not None:
            self._message(stanza, origin, origin.bare, "")
        # RFC 6120 §10.3.1: a message with no 'to' is treated as to the bare JID... of
        # the sender; delivering our own message back is useless, so it is dropped.

    def _to_host(self, stanza: Element, origin: Resource, tag: str) -> None:
        if tag == IQ:
            if stanza.get("type") in ("get", "set"):
                origin.run(lambda: self.handle_iq(stanza, origin, "host", self.domain))
            else:  # an answer to an iq the server sent (e.g. PEP's caps disco#info)
                self.hooks.fire("iq/host/response", stanza, origin)
        elif tag == MESSAGE and stanza.get("type") not in ("error", "groupchat", "headline"):
            _bounce(stanza, origin, StanzaError("service-unavailable"))
        # Presence to the server itself is ignored (RFC 6121 §8.5.1 spirit).

    async def handle_iq(self, stanza: Element, origin: Resource, scope: str,
                        target: str) -> None:
        """Fire ``iq/<scope>/<type>/<tag>`` and send the reply (RFC 6120 §8.2.3: every
        get/set gets exactly one result or error)."""
        child = stanza[0] if len(stanza) else None
        reply: Any
        if child is None:
            reply = StanzaError("bad-request")
        else:
            name = f"iq/{scope}/{stanza.get('type')}/{child.tag}"
            try:
                reply = await self.bus.fire(name, IqEvent(stanza, origin, target))
            except StanzaError as exc:
                reply = exc
            except Exception:
                log.exception("iq handler %s failed", name)
                reply = StanzaError("internal-server-error")
        if reply is True:
            return
        if reply is None:
            reply = StanzaError("service-unavailable")  # RFC 6120 §8.4
        if isinstance(reply, StanzaError):
            reply = error_reply(stanza, reply)
        origin.deliver(reply)


def _bounce(stanza: Element, origin: Resource, error: StanzaError) -> None:
    """Answer `stanza` with an error unless it is an error itself (RFC 6120 §8.3.1)."""
    if stanza.get("type") != "error":
        origin.deliver(error_reply(stanza, error))


def _router_is_a_session_map(r: Router) -> SessionMap:  # checked by mypy
    return r
