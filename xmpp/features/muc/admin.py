"""Room administration, pure: muc#admin (roles, affiliations, lists; XEP-0045 §8, §9),
muc#owner (configuration, destruction; §10) and the room's disco#info (§6.4).

Each function takes the Room and the requesting full JID and returns the iq payload to
answer with (or None for an empty result); refusals raise StanzaError.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element, SubElement

from ...proto import ns
from ...proto.errors import StanzaError
from . import forms
from .config import MUC, apply_form, to_form
from .room import AFFILIATIONS, RANK, Occupant, Room

ADMIN = MUC + "#admin"
OWNER = MUC + "#owner"
ROOMINFO = MUC + "#roominfo"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
STABLE_ID = MUC + "#stable_id"
ROLES = ("moderator", "participant", "visitor", "none")


def _actor(room: Room, full: str) -> tuple[str, str, Occupant | None]:
    bare = full.partition("/")[0]
    occ = room.by_full.get(full)
    return room.affiliation(bare), occ.role if occ else "none", occ


# -- permission rules (XEP-0045 §8, §9 tables) --------------------------------------------------

def check_role_change(actor_aff: str, actor_role: str, target_aff: str, target_role: str,
                      new_role: str) -> None:
    """May an occupant with (actor_aff, actor_role) give `new_role` to the target?"""
    if actor_role != "moderator":
        raise StanzaError("forbidden", "Only moderators change roles")
    if new_role == "moderator" or target_role == "moderator":
        # §8.6/§8.7: granting and revoking moderator is for admins and owners.
        if RANK[actor_aff] < RANK["admin"]:
            raise StanzaError("forbidden", "Only admins change moderators")
    if new_role != "moderator" and RANK[target_aff] >= RANK["admin"]:
        # §8.2, §8.4: admins and owners cannot be kicked or silenced.
        raise StanzaError("not-allowed", "Admins and owners keep their role")
    if RANK[target_aff] > RANK[actor_aff]:
        raise StanzaError("not-allowed", "Higher affiliation")


def check_affiliation_change(actor_aff: str, target_aff: str, new_aff: str) -> None:
    """May `actor_aff` move someone from `target_aff` to `new_aff`? (§9, §10.3–10.8)"""
    if actor_aff == "owner":
        return
    if actor_aff != "admin":
        raise StanzaError("forbidden", "Only admins and owners change affiliations")
    if RANK[target_aff] >= RANK["admin"] or RANK[new_aff] >= RANK["admin"]:
        raise StanzaError("not-allowed", "Only owners change admins and owners")


# -- muc#admin ------------------------------------------------------------------------------------

def admin_get(room: Room, full: str, query: Element) -> Element:
    aff, role, _occ = _actor(room, full)
    items = query.findall(ns.q(ADMIN, "item"))
    if len(items) != 1:
        raise StanzaError("bad-request", "One item")
    want_aff, want_role = items[0].get("affiliation"), items[0].get("role")
    out = Element(ns.q(ADMIN, "query"))
    if want_aff:
        if want_aff not in AFFILIATIONS:
            raise StanzaError("bad-request", "Unknown affiliation")
        # §9.5: members lists for admins (and for members in members-only rooms: unit rooms).
        allowed = RANK[aff] >= RANK["admin"] or (
            want_aff == "member" and room.config.members_only and aff == "member")
        if not allowed:
            raise StanzaError("forbidden", "Not allowed to see that list")
        for jid in sorted(j for j, a in room.affiliations.items() if a == want_aff):
            attrs = {"affiliation": want_aff, "jid": jid}
            occs = room.occupants_of(jid)
            if occs:
                attrs["nick"] = occs[0].nick
            SubElement(out, ns.q(ADMIN, "item"), attrs)
        return out
    if want_role not in ("moderator", "participant", "visitor"):
        raise StanzaError("bad-request", "Ask for an affiliation or a role")
    if role != "moderator":
        raise StanzaError("forbidden", "Only moderators see role lists")  # §8.5
    for occ in sorted(room.occupants.values(), key=lambda o: o.nick):
        if occ.role == want_role:
            SubElement(out, ns.q(ADMIN, "item"), {
                "nick": occ.nick, "role": occ.role, "jid": occ.full,
                "affiliation": room.affiliation(occ.bare)})
    return out


def admin_set(room: Room, full: str, query: Element) -> None:
    """Role and affiliation changes; every item is checked before any is applied."""
    aff, role, occ = _actor(room, full)
    actor_nick = occ.nick if occ else None
    plan: list[tuple[Occupant | str, str, str | None]] = []
    items = query.findall(ns.q(ADMIN, "item"))
    if not items:
        raise StanzaError("bad-request", "No item")
    pending_owners = {j for j, a in room.affiliations.items() if a == "owner"}
    for item in items:
        reason = item.findtext(ns.q(ADMIN, "reason"))
        new_role, new_aff = item.get("role"), item.get("affiliation")
        nick, jid = item.get("nick"), item.get("jid")
        if new_role is not None:
            if new_role not in ROLES or not nick:
                raise StanzaError("bad-request", "A role change names a nick and a role")
            target = room.occupants.get(nick)
            if target is None:
                raise StanzaError("item-not-found", "No such occupant")  # §8.2
            check_role_change(aff, role, room.affiliation(target.bare), target.role, new_role)
            plan.append((target, new_role, reason))
        elif new_aff is not None:
            if new_aff not in (*AFFILIATIONS, "none"):
                raise StanzaError("bad-request", "Unknown affiliation")
            if not jid and nick and nick in room.occupants:
                jid = room.occupants[nick].bare
            if not jid:
                raise StanzaError("bad-request", "An affiliation change names a JID")
            bare = jid.partition("/")[0]
            if bare in room.managed:
                raise StanzaError("not-allowed", "Unit membership follows the directory")
            check_affiliation_change(aff, room.affiliation(bare), new_aff)
            if new_aff == "owner":
                pending_owners.add(bare)
            else:
                pending_owners.discard(bare)
            plan.append((bare, new_aff, reason))
        else:
            raise StanzaError("bad-request", "Item without role or affiliation")
    if room.unit is None and not pending_owners:
        raise StanzaError("conflict", "A room keeps at least one owner")  # §10.6
    for who, value, reason in plan:
        if isinstance(who, Occupant):
            if room.occupants.get(who.nick) is who:
                room.set_role(who, value, actor_nick, reason)
        else:
            room.set_affiliation(who, value, actor_nick, reason)


# -- muc#owner ------------------------------------------------------------------------------------

def owner_get(room: Room, full: str, query: Element) -> Element:
    aff, _role, _occ = _actor(room, full)
    if aff != "owner":
        raise StanzaError("forbidden", "Only owners configure the room")  # §10.2
    out = Element(ns.q(OWNER, "query"))
    out.append(to_form(room.config))
    return out


def owner_set(room: Room, full: str, query: Element) -> None:
    aff, _role, _occ = _actor(room, full)
    if aff != "owner":
        raise StanzaError("forbidden", "Only owners configure the room")
    destroy = query.find(ns.q(OWNER, "destroy"))
    if destroy is not None:  # §10.9
        room.destroy(destroy.findtext(ns.q(OWNER, "reason")), destroy.get("jid"))
        return
    x = query.find(forms.X)
    if x is None:
        raise StanzaError("bad-request", "A data form is expected")
    if x.get("type") == "cancel":
        if room.locked:  # §10.1.3: cancelling the initial configuration destroys the room
            room.destroy()
        return
    if x.get("type") != "submit":
        raise StanzaError("bad-request", "Submit or cancel the form")
    # §10.1.2: an empty submitted form makes an instant room with the default values.
    room.apply_config(apply_form(room.config, x))


# -- disco#info of a room (§6.4) ------------------------------------------------------------------

def room_info(room: Room, extra_features: list[str]) -> Element:
    q = Element(ns.q(DISCO_INFO, "query"))
    SubElement(q, ns.q(DISCO_INFO, "identity"), {
        "category": "conference", "type": "text",
        "name": room.config.name or room.jid.partition("@")[0]})
    feats = [*room.config.features(), *extra_features]
    for f in sorted(set(feats)):
        SubElement(q, ns.q(DISCO_INFO, "feature"), {"var": f})
    x = forms.form(ROOMINFO, ftype="result")
    forms.add(x, "muc#roominfo_description", "text-single", [room.config.description],
              "Description")
    forms.add(x, "muc#roominfo_occupants", "text-single", [str(len(room.occupants))],
              "Number of occupants")
    forms.add(x, "muc#roominfo_subject", "text-single", [room.subject], "Subject")
    forms.boolean(x, "muc#roominfo_changesubject", room.config.change_subject)
    forms.add(x, "muc#roomconfig_roomname", "text-single", [room.config.name], "Name")
    q.append(x)
    return q
