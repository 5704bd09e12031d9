"""MUC (XEP-0045) over fake sessions and in-memory stores: unit rooms from the directory,
joins, chat, history, ad-hoc rooms, configuration, affiliations and roles, invitations,
voice requests, persistence. No sockets, no database."""

from __future__ import annotations

import dataclasses
from xml.etree.ElementTree import Element

import pytest

from directory.model import Role
from xmpp import features
from xmpp.features.muc.admin import check_affiliation_change, check_role_change
from xmpp.features.muc.config import RoomConfig, apply_form
from xmpp.features.muc.service import MucService
from xmpp.proto.errors import StanzaError

from .fakes import DOMAIN, FakeSession, World

MUC = f"conference.{DOMAIN}"
FIN = f"finance@{MUC}"
U = "{http://jabber.org/protocol/muc#user}"
C = "{jabber:client}"
ERR = "{urn:ietf:params:xml:ns:xmpp-stanzas}"
Z, L, W = (f"zhang.san@{DOMAIN}", f"li.si@{DOMAIN}", f"wang.wu@{DOMAIN}")


#: Only the features MUC meets (others are tested on their own).
FEATURES = ("roster", "presence", "offline", "muc", "disco")


class MucWorld(World):
    async def start(self) -> MucWorld:
        await self.cache.load()
        features.load(self.host, FEATURES)
        await self.host.start()
        return self


async def world(admin: str = "zhang.san") -> World:
    w = MucWorld()
    w.accounts = [dataclasses.replace(a, roles=(Role.UNIT_ADMIN,))
                  if a.address.startswith(admin + "@") else a for a in w.accounts]
    return await w.start()


def svc(w: World) -> MucService:
    return next(h.__self__ for h in w.hooks.handlers("disco/host/items")  # type: ignore[attr-defined]
                if isinstance(getattr(h, "__self__", None), MucService))


def codes(el: Element) -> set[int]:
    return {int(s.get("code", "0")) for s in el.iter(U + "status")}


def item(el: Element) -> Element:
    found = el.find(f"{U}x/{U}item")
    assert found is not None
    return found


def error_of(el: Element) -> str:
    err = el.find(C + "error")
    assert err is not None
    return next(c.tag[len(ERR):] for c in err if c.tag.startswith(ERR) and c.tag != ERR + "text")


async def join(w: World, s: FakeSession, room: str, nick: str, x: str = "") -> list[Element]:
    s.take()
    await w.send(s, f"<presence to='{room}/{nick}'><x xmlns='http://jabber.org/protocol/muc'>"
                    f"{x}</x></presence>")
    return s.take()


async def say(w: World, s: FakeSession, room: str, body: str) -> None:
    await w.send(s, f"<message to='{room}' type='groupchat'><body>{body}</body></message>")


def take(s: FakeSession) -> list[Element]:
    """What `s` got from the MUC service (not its contacts' presence)."""
    return [el for el in s.take() if (el.get("from") or "").partition("/")[0].endswith(MUC)]


def bodies(els: list[Element]) -> list[str]:
    return [el.findtext(C + "body") or "" for el in els
            if el.tag == C + "message" and el.find(C + "body") is not None]


# -- unit rooms ------------------------------------------------------------------------------

async def test_unit_rooms_follow_the_directory() -> None:
    w = await world()
    rooms = svc(w).rooms
    fin = rooms[FIN]
    assert fin.config.name == "财政局" and fin.config.members_only and fin.config.persistent
    assert fin.affiliations == {Z: "admin", L: "member"}
    assert f"health@{MUC}" in rooms and W in rooms[f"health@{MUC}"].affiliations
    # Moving wang.wu to finance: member there, no longer in health.
    w.accounts = [dataclasses.replace(a, unit="finance") if a.address == W else a
                  for a in w.accounts]
    await w.cache.load()
    assert fin.affiliation(W) == "member"
    assert rooms[f"health@{MUC}"].affiliation(W) == "none"
    await svc(w).writer.flush()
    store = svc(w).store
    assert store.rooms[FIN].affiliations[W] == ("member", True)  # type: ignore[attr-defined]


async def test_moved_out_occupant_leaves_with_321() -> None:
    w = await world()
    li = await w.login("li.si")
    await join(w, li, FIN, "李四")
    w.accounts = [dataclasses.replace(a, unit="health") if a.address == L else a
                  for a in w.accounts]
    await w.cache.load()
    out = take(li)
    gone = [el for el in out if el.get("type") == "unavailable"]
    assert gone and {110, 321} <= codes(gone[0])
    assert not svc(w).rooms[FIN].occupants


async def test_join_unit_room_status_and_subject() -> None:
    w = await world()
    z = await w.login("zhang.san")
    out = await join(w, z, FIN, "张三")
    me = out[0]
    assert me.get("from") == f"{FIN}/张三" and {110, 100, 170} <= codes(me)
    assert item(me).get("affiliation") == "admin" and item(me).get("role") == "moderator"
    assert out[-1].find(C + "subject") is not None  # §7.2.15: subject last
    li = await w.login("li.si")
    out = await join(w, li, FIN, "李四")
    assert out[0].get("from") == f"{FIN}/张三" and item(out[0]).get("jid") == f"{Z}/r"
    seen = take(z)
    assert seen[0].get("from") == f"{FIN}/李四" and item(seen[0]).get("role") == "participant"


async def test_non_member_refused() -> None:
    w = await world()
    wang = await w.login("wang.wu")
    out = await join(w, wang, FIN, "王五")
    assert out[0].get("type") == "error" and error_of(out[0]) == "registration-required"


async def test_unit_membership_is_not_editable() -> None:
    w = await world()
    z = await w.login("zhang.san")
    await join(w, z, FIN, "张三")
    r = await w.iq(z, f"<iq type='set' id='a' to='{FIN}'><query xmlns="
                      f"'http://jabber.org/protocol/muc#admin'><item jid='{L}' "
                      "affiliation='none'/></query></iq>")
    assert error_of(r) == "not-allowed"
    # A guest from another unit may be added by the unit-admin.
    r = await w.iq(z, f"<iq type='set' id='b' to='{FIN}'><query xmlns="
                      f"'http://jabber.org/protocol/muc#admin'><item jid='{W}' "
                      "affiliation='member'/></query></iq>")
    assert r.get("type") == "result"
    assert svc(w).rooms[FIN].affiliation(W) == "member"


# -- chat and history -------------------------------------------------------------------------

async def test_groupchat_fanout_stanza_id_and_history() -> None:
    w = await world()
    z, li = await w.login("zhang.san"), await w.login("li.si")
    await join(w, z, FIN, "张三")
    await join(w, li, FIN, "李四")
    take(z)
    fired: list[object] = []
    w.hooks.on("muc/message", fired.append)
    for n in range(3):
        await w.send(z, f"<message to='{FIN}' type='groupchat' id='m{n}'><body>hi {n}</body>"
                        f"<stanza-id xmlns='urn:xmpp:sid:0' by='{FIN}' id='forged'/></message>")
    got = [el for el in take(li) if el.tag == C + "message"]
    assert bodies(got) == ["hi 0", "hi 1", "hi 2"]
    sids = got[0].findall("{urn:xmpp:sid:0}stanza-id")
    assert len(sids) == 1 and sids[0].get("by") == FIN and sids[0].get("id") != "forged"
    assert got[0].get("from") == f"{FIN}/张三" and got[0].get("to") == f"{L}/r"
    assert got[0].get("id") == "m0"
    assert bodies(take(z)) == ["hi 0", "hi 1", "hi 2"]  # the sender gets its echo
    assert len(fired) == 3 and fired[0].stanza_id == sids[0].get("id")  # type: ignore[attr-defined]
    # A second session of li.si joins asking for one message of history.
    li2 = await w.login("li.si", "phone")
    out = await join(w, li2, FIN, "李四", "<history maxstanzas='1'/>")
    hist = [el for el in out if el.tag == C + "message" and el.find(C + "body") is not None]
    assert bodies(hist) == ["hi 2"]
    assert hist[0].find("{urn:xmpp:delay}delay") is not None
    out = await join(w, await w.login("li.si", "tab"), FIN, "李四", "<history maxchars='0'/>")
    assert bodies(out) == []
    out = await join(w, await w.login("li.si", "pc"), FIN, "李四",
                     "<history since='2000-01-01T00:00:00Z'/>")
    assert bodies(out) == ["hi 0", "hi 1", "hi 2"]


async def test_non_occupant_and_visitor_cannot_speak() -> None:
    w = await world()
    li = await w.login("li.si")
    await say(w, li, FIN, "x")
    assert error_of(take(li)[0]) == "not-acceptable"


async def test_leave_and_session_close() -> None:
    w = await world()
    z, li = await w.login("zhang.san"), await w.login("li.si")
    await join(w, z, FIN, "张三")
    await join(w, li, FIN, "李四")
    take(z)
    await w.logout(li)
    out = take(z)
    assert out and out[0].get("type") == "unavailable" and out[0].get("from") == f"{FIN}/李四"
    assert list(svc(w).rooms[FIN].occupants) == ["张三"]
    await w.send(z, "<presence type='unavailable'/>")
    assert not svc(w).rooms[FIN].occupants


# -- ad-hoc rooms -----------------------------------------------------------------------------

ADHOC = f"project@{MUC}"
OWNER_Q = "http://jabber.org/protocol/muc#owner"


async def instant(w: World, s: FakeSession, room: str) -> Element:
    return await w.iq(s, f"<iq type='set' id='inst' to='{room}'><query xmlns='{OWNER_Q}'>"
                         "<x xmlns='jabber:x:data' type='submit'/></query></iq>")


async def test_create_locked_then_instant() -> None:
    w = await world()
    z, wang = await w.login("zhang.san"), await w.login("wang.wu")
    out = await join(w, z, ADHOC, "zs")
    assert {110, 201} <= codes(out[0]) and item(out[0]).get("affiliation") == "owner"
    out = await join(w, wang, ADHOC, "ww")
    assert error_of(out[0]) == "item-not-found"  # locked until configured (§10.1.1)
    assert (await instant(w, z, ADHOC)).get("type") == "result"
    out = await join(w, wang, ADHOC, "ww")
    assert item(out[-2]).get("role") == "participant" and 100 not in codes(out[-2])
    assert item(out[0]).get("jid") is None  # semi-anonymous: participants see no JIDs
    await w.send(wang, f"<presence to='{ADHOC}/ww' type='unavailable'/>")
    await w.send(z, f"<presence to='{ADHOC}/zs' type='unavailable'/>")
    assert ADHOC not in svc(w).rooms  # temporary room gone when empty


async def test_nick_conflict() -> None:
    w = await world()
    z, wang = await w.login("zhang.san"), await w.login("wang.wu")
    await join(w, z, ADHOC, "same")
    await instant(w, z, ADHOC)
    out = await join(w, wang, ADHOC, "same")
    assert out[0].get("type") == "error" and error_of(out[0]) == "conflict"
    out = await join(w, wang, ADHOC, "other")
    await w.send(wang, f"<presence to='{ADHOC}/same'/>")
    assert error_of(take(wang)[0]) == "conflict"
    await w.send(wang, f"<presence to='{ADHOC}/newnick'/>")
    out = take(wang)
    assert out[0].get("type") == "unavailable" and {303, 110} <= codes(out[0])
    assert item(out[0]).get("nick") == "newnick" and out[1].get("from") == f"{ADHOC}/newnick"


async def test_config_form_members_only_password_and_invite() -> None:
    w = await world()
    z, wang, li = (await w.login("zhang.san"), await w.login("wang.wu"),
                   await w.login("li.si"))
    await join(w, z, ADHOC, "zs")
    form = await w.iq(z, f"<iq type='get' id='g' to='{ADHOC}'><query xmlns='{OWNER_Q}'/></iq>")
    vars_ = {f.get("var") for f in form.iter("{jabber:x:data}field")}
    assert {"muc#roomconfig_membersonly", "muc#roomconfig_roomsecret",
            "muc#roomconfig_persistentroom", "muc#roomconfig_moderatedroom"} <= vars_
    r = await w.iq(z, f"<iq type='set' id='s' to='{ADHOC}'><query xmlns='{OWNER_Q}'>"
                      "<x xmlns='jabber:x:data' type='submit'>"
                      "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig"
                      "</value></field>"
                      "<field var='muc#roomconfig_roomname'><value>专项组</value></field>"
                      "<field var='muc#roomconfig_membersonly'><value>1</value></field>"
                      "<field var='muc#roomconfig_persistentroom'><value>1</value></field>"
                      "<field var='muc#roomconfig_passwordprotectedroom'><value>1</value></field>"
                      "<field var='muc#roomconfig_roomsecret'><value>pw</value></field>"
                      "</x></query></iq>")
    assert r.get("type") == "result"
    room = svc(w).rooms[ADHOC]
    assert room.config.name == "专项组" and room.config.members_only and room.config.password
    out = await join(w, wang, ADHOC, "ww", "<password>pw</password>")
    assert error_of(out[0]) == "registration-required"
    await w.send(z, f"<message to='{ADHOC}'><x xmlns='http://jabber.org/protocol/muc#user'>"
                    f"<invite to='{W}'><reason>join us</reason></invite></x></message>")
    inv = [el for el in take(wang) if el.find(f"{U}x/{U}invite") is not None]
    assert inv and inv[0].get("from") == ADHOC
    assert inv[0].find(f"{U}x/{U}invite").get("from") == Z  # type: ignore[union-attr]
    assert inv[0].findtext(f"{U}x/{U}password") == "pw"
    assert room.affiliation(W) == "member"
    out = await join(w, wang, ADHOC, "ww")
    assert error_of(out[0]) == "not-authorized"  # password still needed
    out = await join(w, wang, ADHOC, "ww", "<password>pw</password>")
    assert 110 in codes(out[-2])
    # A participant may not invite to a members-only room unless allowed.
    await w.send(wang, f"<message to='{ADHOC}'><x xmlns='http://jabber.org/protocol/muc#user'>"
                       f"<invite to='{L}'/></x></message>")
    assert error_of(take(wang)[0]) == "forbidden"
    assert not [el for el in take(li) if el.find(f"{U}x/{U}invite") is not None]
    # Persisted: the room and its affiliations reach the store.
    await svc(w).writer.flush()
    row = svc(w).store.rooms[ADHOC]  # type: ignore[attr-defined]
    assert row.affiliations[W] == ("member", False) and row.config["name"] == "专项组"


async def test_kick_ban_and_member_list() -> None:
    w = await world()
    z, wang, li = (await w.login("zhang.san"), await w.login("wang.wu"),
                   await w.login("li.si"))
    await join(w, z, ADHOC, "zs")
    await instant(w, z, ADHOC)
    await join(w, wang, ADHOC, "ww")
    await join(w, li, ADHOC, "ls")
    admin_q = "http://jabber.org/protocol/muc#admin"
    r = await w.iq(li, f"<iq type='set' id='k' to='{ADHOC}'><query xmlns='{admin_q}'>"
                       "<item nick='ww' role='none'/></query></iq>")
    assert error_of(r) == "forbidden"  # participants do not kick
    take(z), take(wang), take(li)
    r = await w.iq(z, f"<iq type='set' id='k' to='{ADHOC}'><query xmlns='{admin_q}'>"
                      "<item nick='ww' role='none'><reason>bye</reason></item></query></iq>")
    assert r.get("type") == "result"
    out = take(wang)
    assert {110, 307} <= codes(out[0]) and out[0].get("type") == "unavailable"
    assert item(out[0]).findtext(U + "reason") == "bye"
    assert 307 in codes(take(li)[0])
    await w.iq(z, f"<iq type='set' id='b' to='{ADHOC}'><query xmlns='{admin_q}'>"
                  "<item nick='ls' affiliation='outcast'/></query></iq>")
    assert {110, 301} <= codes(take(li)[0])
    out = await join(w, li, ADHOC, "ls")
    assert error_of(out[0]) == "forbidden"
    r = await w.iq(z, f"<iq type='get' id='l' to='{ADHOC}'><query xmlns='{admin_q}'>"
                      "<item affiliation='outcast'/></query></iq>")
    assert [i.get("jid") for i in r.iter(f"{{{admin_q}}}item")] == [L]
    r = await w.iq(z, f"<iq type='set' id='o' to='{ADHOC}'><query xmlns='{admin_q}'>"
                      f"<item jid='{Z}' affiliation='member'/></query></iq>")
    assert error_of(r) == "conflict"  # the last owner stays


async def test_moderated_room_voice_request() -> None:
    w = await world()
    z, wang = await w.login("zhang.san"), await w.login("wang.wu")
    await join(w, z, ADHOC, "zs")
    await w.iq(z, f"<iq type='set' id='s' to='{ADHOC}'><query xmlns='{OWNER_Q}'>"
                  "<x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_moderatedroom'>"
                  "<value>1</value></field></x></query></iq>")
    out = await join(w, wang, ADHOC, "ww")
    assert item(out[-2]).get("role") == "visitor"
    await say(w, wang, ADHOC, "can I?")
    assert error_of(take(wang)[0]) == "forbidden"
    take(z)
    req = ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
           "<value>http://jabber.org/protocol/muc#request</value></field>"
           "<field var='muc#role'><value>participant</value></field></x>")
    await w.send(wang, f"<message to='{ADHOC}'>{req}</message>")
    forms = [el for el in take(z) if el.find("{jabber:x:data}x") is not None]
    assert forms and forms[0].get("from") == ADHOC
    approve = ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
               "<value>http://jabber.org/protocol/muc#request</value></field>"
               "<field var='muc#roomnick'><value>ww</value></field>"
               "<field var='muc#request_allow'><value>true</value></field></x>")
    await w.send(z, f"<message to='{ADHOC}'>{approve}</message>")
    assert item(take(wang)[0]).get("role") == "participant"
    await say(w, wang, ADHOC, "thanks")
    assert bodies(take(z)) == ["thanks"]


async def test_disco_of_service_room_and_server() -> None:
    w = await world()
    z = await w.login("zhang.san")
    r = await w.iq(z, "<iq type='get' id='i' to='cx.example'><query "
                      "xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    assert MUC in [i.get("jid") for i in r.iter("{http://jabber.org/protocol/disco#items}item")]
    r = await w.iq(z, f"<iq type='get' id='j' to='{MUC}'><query "
                      "xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    items = {i.get("jid"): i.get("name") for i in r.iter("{http://jabber.org/protocol/disco#items}item")}
    assert items[FIN] == "财政局"
    r = await w.iq(z, f"<iq type='get' id='k' to='{FIN}'><query "
                      "xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    feats = {f.get("var") for f in r.iter("{http://jabber.org/protocol/disco#info}feature")}
    assert {"http://jabber.org/protocol/muc", "muc_membersonly", "muc_persistent",
            "muc_nonanonymous", "http://jabber.org/protocol/muc#stable_id"} <= feats


async def test_persistence_round_trip() -> None:
    w = await world()
    z = await w.login("zhang.san")
    await join(w, z, FIN, "张三")
    await w.send(z, f"<message to='{FIN}' type='groupchat'><subject>周会</subject></message>")
    await say(w, z, FIN, "kept")
    s = svc(w)
    await s.writer.flush()
    again = MucService(w.host, s.store)
    await again.start()
    room = again.rooms[FIN]
    assert room.subject == "周会" and [h.stanza.findtext(C + "body") for h in room.history] == ["kept"]
    assert room.affiliation(Z) == "admin" and Z in room.managed


# -- pure rules -------------------------------------------------------------------------------

def test_permission_rules() -> None:
    check_role_change("admin", "moderator", "none", "participant", "none")
    with pytest.raises(StanzaError):
        check_role_change("none", "participant", "none", "participant", "none")
    with pytest.raises(StanzaError):
        check_role_change("admin", "moderator", "owner", "moderator", "none")
    with pytest.raises(StanzaError):
        check_role_change("member", "moderator", "none", "participant", "moderator")
    check_affiliation_change("admin", "none", "member")
    with pytest.raises(StanzaError):
        check_affiliation_change("admin", "admin", "none")
    with pytest.raises(StanzaError):
        check_affiliation_change("member", "none", "member")


def test_config_form_validation() -> None:
    from xml.etree.ElementTree import fromstring
    x = fromstring("<x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_maxusers'>"
                   "<value>abc</value></field></x>")
    with pytest.raises(StanzaError):
        apply_form(RoomConfig(), x)
    x = fromstring("<x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_"
                   "passwordprotectedroom'><value>1</value></field></x>")
    with pytest.raises(StanzaError):
        apply_form(RoomConfig(), x)  # protected without a password


# -- squatting and look-alike nicks (issue 12 item 5) -----------------------------------------

SQUAT = f"stats@{MUC}"


async def persistent_room(w: World, s: FakeSession, room: str, nick: str) -> None:
    await join(w, s, room, nick)
    form = ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>"
            "http://jabber.org/protocol/muc#roomconfig</value></field>"
            "<field var='muc#roomconfig_persistentroom'><value>1</value></field></x>")
    res = await w.iq(s, f"<iq type='set' id='cfg' to='{room}'><query xmlns='{OWNER_Q}'>"
                        f"{form}</query></iq>")
    assert res.get("type") == "result"


async def test_a_squatted_room_is_closed_and_never_becomes_the_unit_room() -> None:
    w = await world()
    wang = await w.login("wang.wu")  # of health: not going to be in the new unit
    await persistent_room(w, wang, SQUAT, "ww")
    s = svc(w)
    await say(w, wang, SQUAT, "planted before the unit existed")
    await s.writer.flush()
    assert s.rooms[SQUAT].affiliation(W) == "owner" and SQUAT in s.store.rooms  # type: ignore[attr-defined]
    take(wang)
    # The unit "stats" appears with li.si in it.
    w.units["stats"] = "统计局"
    w.accounts = [dataclasses.replace(a, unit="stats") if a.address == L else a
                  for a in w.accounts]
    await w.cache.load()
    out = take(wang)
    gone = [el for el in out if el.get("type") == "unavailable"]
    assert gone and gone[0].find(f"{U}x/{U}destroy") is not None  # §10.9: told it closed
    room = s.rooms[SQUAT]
    assert room.unit == "stats" and room.config.members_only
    assert room.affiliations == {L: "member"}  # the squatter's ownership is gone
    assert not room.history and not room.occupants
    await s.writer.flush()
    stored = s.store.rooms[SQUAT]  # type: ignore[attr-defined]
    assert stored.unit == "stats" and stored.affiliations == {L: ("member", True)}
    assert stored.history == []
    # The former owner cannot get back in: members only.
    out = await join(w, wang, SQUAT, "ww")
    assert error_of(out[0]) == "registration-required"


async def test_lookalike_and_case_variant_nicks_are_refused() -> None:
    w = await world()
    z, li = await w.login("zhang.san"), await w.login("li.si")
    await join(w, z, FIN, "bob")
    for nick in ("bоb", "BOB", "Ｂｏｂ", "b\u043eb", "bοb"):  # Cyrillic о, case, fullwidth, Greek ο
        out = await join(w, li, FIN, nick)
        assert out and out[0].get("type") == "error", nick
        assert error_of(out[0]) == "conflict", nick
    out = await join(w, li, FIN, "bobby")
    assert [el.get("from") for el in out if 110 in codes(el)] == [f"{FIN}/bobby"]
    # A nick change to a look-alike is refused the same way.
    await w.send(li, f"<presence to='{FIN}/b\u043eb'/>")
    assert error_of(take(li)[0]) == "conflict"


async def test_nicks_are_prepared_with_the_precis_nickname_profile() -> None:
    w = await world()
    z = await w.login("zhang.san")
    out = await join(w, z, FIN, "\u3000Zhang\u00a0\u00a0San ")  # ideographic and no-break spaces
    [me] = [el for el in out if 110 in codes(el)]
    assert me.get("from") == f"{FIN}/Zhang San" and 210 in codes(me)  # §7.2.11: nick changed
    out = await join(w, await w.login("li.si"), FIN, "li\u200dsi")  # zero width joiner
    assert error_of(out[0]) == "jid-malformed"


# -- occupancy in the store, a new home keeps live occupants (issue 14) ------------------------

class FakeCluster:
    """The router's PostgreSQL side as the MUC sees it: this node's id, the room homes."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.room_homes: dict[str, str] = {}

    def bound(self, _s: object) -> None: ...
    def unbound(self, _s: object) -> None: ...
    def changed(self, _s: object) -> None: ...
    def registered(self, _s: object) -> None: ...
    def stored_offline(self, _b: str) -> None: ...


async def test_occupancy_is_stored_and_a_new_home_keeps_live_occupants() -> None:
    w = await world()
    w.router.remote = FakeCluster("node-a")  # type: ignore[assignment]
    m = svc(w)
    z, li = await w.login("zhang.san"), await w.login("li.si")
    await join(w, z, FIN, "张三")
    await join(w, li, FIN, "李四")
    await m.writer.flush()
    store = m.store
    rows = {(o.full, o.nick, o.role, o.node) for o in await store.occupants(FIN)}
    assert rows == {(f"{Z}/r", "张三", "moderator", "node-a"),
                    (f"{L}/r", "李四", "participant", "node-a")}
    # this node loses the room and gets it back; li.si's row names a node that is gone
    await m.on_room_lost(FIN)
    assert m.rooms[FIN].occupants == {}
    gone = next(o for o in await store.occupants(FIN) if o.full == f"{L}/r")
    await store.write_occupants([dataclasses.replace(gone, node="node-b")], [])
    take(z)
    await m.on_room_home(FIN)
    left = [el for el in take(z) if el.get("type") == "unavailable"]
    assert [el.get("from") for el in left] == [f"{FIN}/李四"]  # told once, as li.si left
    assert set(m.rooms[FIN].occupants) == {"张三"}
    await say(w, z, FIN, "still here")  # no rejoin: zhang.san is in the room
    assert bodies(take(z)) == ["still here"]
    await m.writer.flush()
    assert [o.full for o in await store.occupants(FIN)] == [f"{Z}/r"]
    # leaving removes the row
    await w.send(z, f"<presence to='{FIN}/张三' type='unavailable'/>")
    await m.writer.flush()
    assert await store.occupants(FIN) == []
