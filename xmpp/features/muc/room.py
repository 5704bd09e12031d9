"""One room's state and rules (XEP-0045), pure: no I/O, no clock (``now`` is an argument).

A Room holds its configuration, affiliations (bare JID → owner/admin/member/outcast),
occupants (nick → Occupant with one or more sessions of one bare JID) and recent history
in memory; what it sends goes to an ``Outbox`` (the service turns that into deliveries,
tests into lists). ``changed`` tells the service that durable state moved (config,
affiliations, subject) and must be saved; history items are returned to it.

Nicknames are prepared with the PRECIS Nickname profile (RFC 8266, ``nick.prepare``); a
nick whose comparison key or look-alike skeleton (``nick.skeleton``) matches another
person's occupant in the room is refused with ``conflict`` (XEP-0045 §7.2.9).
"""

from __future__ import annotations

import copy
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from xml.etree.ElementTree import Element, SubElement

from ...proto import ns
from ...proto.errors import StanzaError, error_reply
from ...proto.serializer import to_string
from .config import MUC, RoomConfig
from .nick import NickError, prepare, skeleton

USER = MUC + "#user"
REQUEST = MUC + "#request"
SID = "urn:xmpp:sid:0"
DELAY = "urn:xmpp:delay"
MUC_X = ns.q(MUC, "x")
USER_X = ns.q(USER, "x")
ITEM = ns.q(USER, "item")
STATUS = ns.q(USER, "status")
BODY = ns.q(ns.CLIENT, "body")
SUBJECT = ns.q(ns.CLIENT, "subject")
STANZA_ID = ns.q(SID, "stanza-id")
RANK = {"outcast": 0, "none": 1, "member": 2, "admin": 3, "owner": 4}
AFFILIATIONS = ("owner", "admin", "member", "outcast")


class Outbox(Protocol):
    def send(self, el: Element) -> None:
        """Deliver `el` to its 'to' (a full JID, or a bare JID: available resources or
        offline storage)."""

    def broadcast(self, el: Element, to: list[str]) -> None:
        """Deliver `el` (no 'to' yet) to each full JID in `to`, 'to' set per recipient."""


@dataclass(slots=True)
class HistoryItem:
    """A groupchat message as broadcast (no 'to'), with its stable id (XEP-0359)."""

    stanza_id: str
    nick: str
    sender: str        # real bare JID
    stamp: float
    stanza: Element
    has_body: bool


class Occupant:
    __slots__ = ("nick", "bare", "sessions", "role", "skel")

    def __init__(self, nick: str, bare: str, role: str) -> None:
        self.nick = nick
        self.skel = skeleton(nick)
        self.bare = bare
        self.sessions: dict[str, Element] = {}  # full JID → its last presence to the room
        self.role = role

    @property
    def full(self) -> str:
        return next(reversed(self.sessions))


def stamp(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_stamp(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Room:
    def __init__(self, jid: str, config: RoomConfig, out: Outbox, *, unit: str | None = None,
                 locked: bool = False,
                 new_id: Callable[[], str] = lambda: str(uuid.uuid4())) -> None:
        self.jid = jid
        self.config = config
        self.out = out
        self.unit = unit                      # a unit room: kept in sync with the directory
        self.locked = locked                  # XEP-0045 §10.1.1: new, not yet configured
        self.new_id = new_id
        self.affiliations: dict[str, str] = {}
        self.managed: set[str] = set()        # affiliations granted by the directory
        self.occupants: dict[str, Occupant] = {}
        self.by_full: dict[str, Occupant] = {}
        self.history: deque[HistoryItem] = deque(maxlen=max(1, config.history_length))
        self.subject = ""
        self.subject_nick = ""
        self.changed = False
        self.destroyed = False
        # Occupant sessions whose occupancy (presence, nick, role) changed or that left:
        # the service writes them to PostgreSQL (the next home reads them, issue 14).
        self.touched: set[str] = set()

    # -- small queries --------------------------------------------------------------------

    def affiliation(self, bare: str) -> str:
        return self.affiliations.get(bare, "none")

    def default_role(self, aff: str) -> str:
        if aff in ("owner", "admin"):
            return "moderator"
        if aff == "member" or not self.config.moderated:
            return "participant"
        return "visitor"

    def sees_jids(self, occ: Occupant) -> bool:
        return self.config.non_anonymous or occ.role == "moderator"

    def fulls(self) -> list[str]:
        return list(self.by_full)

    def occupants_of(self, bare: str) -> list[Occupant]:
        return [o for o in self.occupants.values() if o.bare == bare]

    def set_config(self, config: RoomConfig) -> None:
        self.config = config
        if self.history.maxlen != max(1, config.history_length):
            self.history = deque(self.history, maxlen=max(1, config.history_length))
        self.changed = True

    # -- presence out -----------------------------------------------------------------------

    def _presence(self, occ: Occupant, *, jid: str | None, codes: Iterable[int] = (),
                  unavailable: bool = False, actor: str | None = None,
                  reason: str | None = None, new_nick: str | None = None,
                  destroy: Element | None = None, status_text: str | None = None) -> Element:
        el = Element(ns.PRESENCE, {"from": f"{self.jid}/{occ.nick}"})
        if unavailable:
            el.set("type", "unavailable")
            if status_text:
                SubElement(el, ns.q(ns.CLIENT, "status")).text = status_text
        elif occ.sessions:
            for child in occ.sessions[occ.full]:
                if child.tag not in (MUC_X, USER_X):
                    el.append(child)
        x = SubElement(el, USER_X)
        item = SubElement(x, ITEM, {"affiliation": self.affiliation(occ.bare),
                                    "role": "none" if unavailable else occ.role})
        if jid:
            item.set("jid", jid)
        if new_nick:
            item.set("nick", new_nick)
        if actor:
            SubElement(item, ns.q(USER, "actor"), {"nick": actor})
        if reason:
            SubElement(item, ns.q(USER, "reason")).text = reason
        if destroy is not None:
            x.append(destroy)
        for code in codes:
            SubElement(x, STATUS, {"code": str(code)})
        return el

    def _broadcast_presence(self, occ: Occupant, *, self_codes: Iterable[int] = (),
                            codes: Iterable[int] = (), to_self: bool = True,
                            full: str | None = None, **kw: object) -> None:
        """`occ`'s presence to every occupant (real JID to those allowed, XEP-0045 §7.2.3),
        and to its own sessions with status 110."""
        codes = list(codes)
        full = full or (occ.full if occ.sessions else None)
        seeing: list[str] = []
        blind: list[str] = []
        for other in self.occupants.values():
            if other is not occ:
                (seeing if self.sees_jids(other) else blind).extend(other.sessions)
        if seeing:
            self.out.broadcast(self._presence(occ, jid=full, codes=codes, **kw), seeing)  # type: ignore[arg-type]
        if blind:
            self.out.broadcast(self._presence(occ, jid=None, codes=codes, **kw), blind)  # type: ignore[arg-type]
        if to_self:
            mine = [110, *codes, *self_codes]
            for f in list(occ.sessions):
                self.out.broadcast(self._presence(occ, jid=f, codes=mine, **kw), [f])  # type: ignore[arg-type]

    def _error(self, stanza: Element, error: StanzaError) -> None:
        if stanza.get("type") != "error":
            reply = error_reply(stanza, error)
            if stanza.tag == ns.PRESENCE:
                reply.insert(0, Element(MUC_X))  # XEP-0045 §7.2: errors echo <x/> (no password)
            self.out.send(reply)

    # -- presence in (XEP-0045 §7.2, §7.6, §7.14) ---------------------------------------------

    def presence(self, stanza: Element, full: str, nick: str, now: float,
                 created: bool = False) -> None:
        """A presence from `full` to room/`nick`."""
        ptype = stanza.get("type")
        occ = self.by_full.get(full)
        if ptype == "error":
            if occ is not None:
                self._leave(occ, full, None)  # a session that bounces is gone (§7.2.x ghosts)
            return
        if ptype == "unavailable":
            if occ is not None:
                self._leave(occ, full, stanza.findtext(ns.q(ns.CLIENT, "status")))
            return
        if ptype is not None:
            return
        try:
            if occ is None:
                self._join(stanza, full, nick, now, created)
            elif occ.nick != nick:
                self._change_nick(stanza, occ, full, nick)
            else:
                occ.sessions[full] = stanza
                self.touched.add(full)
                self._broadcast_presence(occ)
        except StanzaError as exc:
            self._error(stanza, exc)

    def _join(self, stanza: Element, full: str, nick: str, now: float, created: bool) -> None:
        bare = full.partition("/")[0]
        aff = self.affiliation(bare)
        x = stanza.find(MUC_X)
        if self.locked and aff != "owner":
            raise StanzaError("item-not-found", "The room is not configured yet")  # §10.1.1
        if aff == "outcast":
            raise StanzaError("forbidden", "You are banned from this room")  # §7.2.7
        if self.config.members_only and RANK[aff] < RANK["member"]:
            raise StanzaError("registration-required", "Members only")  # §7.2.6
        if self.config.password:
            given = x.findtext(ns.q(MUC, "password")) if x is not None else None
            if given != self.config.password:
                raise StanzaError("not-authorized", "Password required")  # §7.2.5
        clean = _prepare(nick)
        taken = self.occupants.get(clean)
        if taken is not None and taken.bare != bare:
            raise StanzaError("conflict", "That nickname is in use")  # §7.2.9
        if taken is None:
            self._refuse_lookalike(clean, bare)
        if (taken is None and self.config.max_users
                and len(self.occupants) >= self.config.max_users and RANK[aff] < RANK["admin"]):
            raise StanzaError("service-unavailable", "The room is full")  # §7.2.10
        # §7.2.3: existing occupants' presence to the newcomer, then its own to everyone.
        role = self.default_role(aff)
        me_sees = self.config.non_anonymous or role == "moderator"
        for other in self.occupants.values():
            if other is taken:
                continue
            self.out.broadcast(self._presence(other, jid=other.full if me_sees else None),
                               [full])
        codes = []
        if self.config.non_anonymous:
            codes.append(100)
        if self.config.logging:
            codes.append(170)
        if created:
            codes.append(201)
        if clean != nick:
            codes.append(210)
        self.touched.add(full)
        if taken is not None:  # another session of the same occupant (multi-session)
            taken.sessions[full] = stanza
            self.by_full[full] = taken
            self.out.broadcast(self._presence(taken, jid=full, codes=[110, *codes]), [full])
        else:
            occ = Occupant(clean, bare, role)
            occ.sessions[full] = stanza
            self.occupants[clean] = occ
            self.by_full[full] = occ
            self._broadcast_presence(occ, self_codes=codes)
        self._send_history(full, x, now)
        self._send_subject([full])

    def _refuse_lookalike(self, nick: str, bare: str) -> None:
        """Another person's nick that looks the same (or differs in case only) is taken."""
        skel = skeleton(nick)
        for other in self.occupants.values():
            if other.bare != bare and other.skel == skel:
                raise StanzaError("conflict", "That nickname looks like one in use")

    def _send_history(self, full: str, x: Element | None, now: float) -> None:
        """XEP-0045 §7.2.15: the most recent messages, limited by the <history/> request."""
        h = x.find(ns.q(MUC, "history")) if x is not None else None
        maxstanzas = len(self.history)
        maxchars: int | None = None
        since: float | None = None
        if h is not None:
            try:
                if h.get("maxstanzas") is not None:
                    maxstanzas = min(maxstanzas, max(0, int(h.get("maxstanzas", "0"))))
                if h.get("maxchars") is not None:
                    maxchars = max(0, int(h.get("maxchars", "0")))
                if h.get("seconds") is not None:
                    since = now - max(0, int(h.get("seconds", "0")))
            except ValueError:
                pass
            if h.get("since"):
                t = _parse_stamp(h.get("since", ""))
                if t is not None:
                    since = t if since is None else max(since, t)
        picked: list[Element] = []
        chars = 0
        for item in reversed(self.history):
            if len(picked) >= maxstanzas or (since is not None and item.stamp < since):
                break
            if not item.has_body:
                continue
            el = copy.copy(item.stanza)
            SubElement(el, ns.q(DELAY, "delay"), {"from": self.jid, "stamp": stamp(item.stamp)})
            if maxchars is not None:
                chars += len(to_string(el))
                if chars > maxchars:
                    break
            picked.append(el)
        for el in reversed(picked):
            self.out.broadcast(el, [full])

    def _send_subject(self, to: list[str]) -> None:
        frm = f"{self.jid}/{self.subject_nick}" if self.subject_nick else self.jid
        el = Element(ns.MESSAGE, {"type": "groupchat", "from": frm})
        SubElement(el, SUBJECT).text = self.subject or None
        self.out.broadcast(el, to)

    def _leave(self, occ: Occupant, full: str, status: str | None) -> None:
        self.touched.add(full)
        occ.sessions.pop(full, None)
        self.by_full.pop(full, None)
        if occ.sessions:  # other sessions stay: only this one hears it left
            self.out.broadcast(self._presence(occ, jid=full, codes=[110], unavailable=True),
                               [full])
            return
        del self.occupants[occ.nick]
        self._broadcast_presence(occ, unavailable=True, status_text=status, to_self=False,
                                 full=full)
        self.out.broadcast(self._presence(occ, jid=full, codes=[110], unavailable=True,
                                          status_text=status), [full])

    def _change_nick(self, stanza: Element, occ: Occupant, full: str, nick: str) -> None:
        """XEP-0045 §7.6: unavailable with 303 from the old nick, then the new one."""
        clean = _prepare(nick)
        self.touched.update(occ.sessions)
        self.touched.add(full)
        if clean == occ.nick:  # the same nick once prepared: nothing changes
            occ.sessions[full] = stanza
            self._broadcast_presence(occ)
            return
        taken = self.occupants.get(clean)
        if taken is not None:
            raise StanzaError("conflict", "That nickname is in use")
        self._refuse_lookalike(clean, occ.bare)
        occ.sessions[full] = stanza
        self._broadcast_presence(occ, codes=[303], unavailable=True, new_nick=clean)
        del self.occupants[occ.nick]
        occ.nick = clean
        occ.skel = skeleton(clean)
        self.occupants[clean] = occ
        self._broadcast_presence(occ, self_codes=[210] if clean != nick else [])

    def restore(self, full: str, nick: str, role: str, presence: Element) -> None:
        """An occupant session read back from PostgreSQL by a new home (issue 14): it
        is in the room as it was, nobody is told (nothing changed for them)."""
        bare = full.partition("/")[0]
        occ = self.occupants.get(nick)
        if occ is None:
            occ = self.occupants[nick] = Occupant(nick, bare, role)
        elif occ.bare != bare:
            return  # cannot happen with rows one home wrote; refuse a mixed occupant
        occ.sessions[full] = presence
        self.by_full[full] = occ

    def session_gone(self, full: str) -> None:
        """The session ended without telling the room (RFC 6121 §4.5.2 on its behalf)."""
        occ = self.by_full.get(full)
        if occ is not None:
            self._leave(occ, full, None)

    def remove(self, occ: Occupant, codes: list[int], actor: str | None = None,
               reason: str | None = None, destroy: Element | None = None) -> None:
        """Kick, ban, or removal by affiliation change / shutdown (XEP-0045 §8.2, §9.1)."""
        fulls = list(occ.sessions)
        self.touched.update(fulls)
        kw = dict(actor=actor, reason=reason, destroy=destroy)
        self.occupants.pop(occ.nick, None)
        for f in fulls:
            self.by_full.pop(f, None)
        self._broadcast_presence(occ, codes=codes, unavailable=True, to_self=False,
                                 full=fulls[-1] if fulls else None, **kw)  # type: ignore[arg-type]
        for f in fulls:
            self.out.broadcast(self._presence(occ, jid=f, codes=[110, *codes], unavailable=True,
                                              **kw), [f])  # type: ignore[arg-type]

    # -- messages (XEP-0045 §7.4, §7.5, §8.1) ---------------------------------------------------

    def groupchat(self, stanza: Element, full: str, now: float) -> HistoryItem | None:
        occ = self.by_full.get(full)
        try:
            if occ is None:
                raise StanzaError("not-acceptable", "You are not in this room")  # §7.4
            if occ.role == "visitor":
                raise StanzaError("forbidden", "You have no voice in this room")  # §7.4
            body = stanza.find(BODY)
            subject = stanza.find(SUBJECT)
            if subject is not None and body is None:
                if occ.role != "moderator" and not self.config.change_subject:
                    raise StanzaError("forbidden", "You may not change the subject")  # §8.1
                self.subject = subject.text or ""
                self.subject_nick = occ.nick
                self.changed = True
        except StanzaError as exc:
            self._error(stanza, exc)
            return None
        msg = Element(ns.MESSAGE, {k: v for k, v in stanza.attrib.items()
                                   if k not in ("to", "from")})
        msg.set("from", f"{self.jid}/{occ.nick}")
        msg.set("type", "groupchat")
        for child in stanza:
            # XEP-0359 §3.1: a stanza-id claiming to be ours is removed.
            if child.tag == STANZA_ID and child.get("by") == self.jid:
                continue
            msg.append(child)
        sid = self.new_id()
        SubElement(msg, STANZA_ID, {"id": sid, "by": self.jid})
        self.out.broadcast(msg, self.fulls())
        item = HistoryItem(sid, occ.nick, occ.bare, now, msg, body is not None)
        if body is not None:
            self.history.append(item)
        return item

    def private(self, stanza: Element, full: str, nick: str) -> None:
        """A message to room/nick (XEP-0045 §7.5)."""
        occ = self.by_full.get(full)
        try:
            if stanza.get("type") == "groupchat":
                raise StanzaError("bad-request", "Groupchat goes to the room")
            if occ is None:
                raise StanzaError("not-acceptable", "You are not in this room")
            target = self.occupants.get(nick)
            if target is None:
                raise StanzaError("item-not-found", "No such occupant")
            pm = self.config.allow_pm
            if pm == "none" or (pm == "moderators" and occ.role != "moderator") or \
                    (pm == "participants" and occ.role == "visitor"):
                raise StanzaError("forbidden", "Private messages are not allowed")
        except StanzaError as exc:
            self._error(stanza, exc)
            return
        msg = Element(ns.MESSAGE, {k: v for k, v in stanza.attrib.items()
                                   if k not in ("to", "from")})
        msg.set("from", f"{self.jid}/{occ.nick}")
        for child in stanza:
            msg.append(child)
        if msg.find(USER_X) is None:
            SubElement(msg, USER_X)
        self.out.broadcast(msg, list(target.sessions))

    # -- affiliations and roles (XEP-0045 §8, §9) -----------------------------------------------

    def set_affiliation(self, bare: str, new: str, actor: str | None = None,
                        reason: str | None = None) -> None:
        old = self.affiliation(bare)
        if new == old:
            return
        if new == "none":
            self.affiliations.pop(bare, None)
        else:
            self.affiliations[bare] = new
        self.changed = True
        for occ in self.occupants_of(bare):
            if new == "outcast":
                self.remove(occ, [301], actor, reason)  # §9.1 ban
            elif self.config.members_only and RANK[new] < RANK["member"]:
                self.remove(occ, [321], actor, reason)  # §9.4 membership revoked
            else:
                occ.role = self.default_role(new)
                self.touched.update(occ.sessions)
                self._broadcast_presence(occ, actor=actor, reason=reason)

    def set_role(self, occ: Occupant, role: str, actor: str | None = None,
                 reason: str | None = None) -> None:
        if role == "none":
            self.remove(occ, [307], actor, reason)  # §8.2 kick
            return
        if role != occ.role:
            occ.role = role
            self.touched.update(occ.sessions)
            self._broadcast_presence(occ, actor=actor, reason=reason)

    def apply_config(self, new: RoomConfig) -> None:
        """Owner changed the configuration: tell occupants (§10.2.1), enforce it."""
        old = self.config
        self.set_config(new)
        self.locked = False
        codes = [104]
        if new.non_anonymous != old.non_anonymous:
            codes.append(172 if new.non_anonymous else 173)
        if new.logging != old.logging:
            codes.append(170 if new.logging else 171)
        el = Element(ns.MESSAGE, {"type": "groupchat", "from": self.jid})
        x = SubElement(el, USER_X)
        for c in codes:
            SubElement(x, STATUS, {"code": str(c)})
        if self.occupants:
            self.out.broadcast(el, self.fulls())
        if new.members_only and not old.members_only:
            for occ in list(self.occupants.values()):
                if RANK[self.affiliation(occ.bare)] < RANK["member"]:
                    self.remove(occ, [322])  # §9.? room became members-only

    def destroy(self, reason: str | None = None, alternate: str | None = None) -> None:
        """XEP-0045 §10.9: every occupant gets unavailable with <destroy/>."""
        d = Element(ns.q(USER, "destroy"), {"jid": alternate} if alternate else {})
        if reason:
            SubElement(d, ns.q(USER, "reason")).text = reason
        for occ in list(self.occupants.values()):
            self.remove(occ, [], destroy=d)
        self.destroyed = True
        self.changed = True

    # -- invitations, voice requests (§7.8, §7.13) -------------------------------------------

    def invite(self, stanza: Element, full: str, invite: Element) -> str | None:
        """Mediated invitation (§7.8.2); returns the invitee's bare JID when it was made a
        member (members-only rooms)."""
        occ = self.by_full.get(full)
        bare = full.partition("/")[0]
        aff = self.affiliation(bare)
        to = invite.get("to", "")
        if occ is None:
            raise StanzaError("not-acceptable", "You are not in this room")
        if self.config.members_only and RANK[aff] < RANK["admin"] \
                and not self.config.allow_invites:
            raise StanzaError("forbidden", "Only admins may invite to this room")  # §7.8.2
        if self.affiliation(to) == "outcast":
            raise StanzaError("forbidden", "That person is banned")
        msg = Element(ns.MESSAGE, {"from": self.jid, "to": to})
        x = SubElement(msg, USER_X)
        inv = SubElement(x, ns.q(USER, "invite"), {"from": bare})
        reason = invite.findtext(ns.q(USER, "reason"))
        if reason:
            SubElement(inv, ns.q(USER, "reason")).text = reason
        if self.config.password:
            SubElement(x, ns.q(USER, "password")).text = self.config.password
        name = self.config.name or self.jid
        SubElement(msg, BODY).text = f"{bare} invites you to the room {name} ({self.jid})" + \
            (f": {reason}" if reason else "")
        added = None
        if self.config.members_only and RANK[self.affiliation(to)] < RANK["member"]:
            self.set_affiliation(to, "member")  # §7.8.2: the service MAY add to the members
            added = to
        self.out.send(msg)
        return added

    def decline(self, full: str, decline: Element) -> None:
        to = decline.get("to", "")
        if not to:
            return
        msg = Element(ns.MESSAGE, {"from": self.jid, "to": to})
        x = SubElement(msg, USER_X)
        d = SubElement(x, ns.q(USER, "decline"), {"from": full.partition("/")[0]})
        reason = decline.findtext(ns.q(USER, "reason"))
        if reason:
            SubElement(d, ns.q(USER, "reason")).text = reason
        self.out.send(msg)

    def voice_request(self, full: str, values: dict[str, list[str]]) -> None:
        """§7.13: a visitor asks for voice; moderators get an approval form. A moderator
        submitting it with request_allow=true grants it."""
        from . import forms
        occ = self.by_full.get(full)
        if occ is None:
            raise StanzaError("not-acceptable", "You are not in this room")
        if occ.role == "moderator" and "muc#request_allow" in values:
            nick = (values.get("muc#roomnick") or [""])[0]
            target = self.occupants.get(nick)
            if target is not None and forms.as_bool(values["muc#request_allow"]) \
                    and target.role == "visitor":
                self.set_role(target, "participant", occ.nick)
            return
        if occ.role != "visitor":
            return
        for mod in [o for o in self.occupants.values() if o.role == "moderator"]:
            msg = Element(ns.MESSAGE, {"from": self.jid})
            x = forms.form(REQUEST, title="Voice request")
            forms.add(x, "muc#role", "list-single", ["participant"], "Requested role")
            forms.add(x, "muc#jid", "jid-single", [occ.full], "User ID")
            forms.add(x, "muc#roomnick", "text-single", [occ.nick], "Room Nickname")
            forms.boolean(x, "muc#request_allow", False, "Grant voice to this person?")
            msg.append(x)
            self.out.broadcast(msg, list(mod.sessions))


def _prepare(nick: str) -> str:
    try:
        return prepare(nick)  # RFC 8266 §2.2
    except NickError as exc:
        raise StanzaError("jid-malformed", str(exc)) from None
