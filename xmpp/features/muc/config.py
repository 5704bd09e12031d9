"""Room configuration (XEP-0045 §10.2, FORM_TYPE muc#roomconfig): the values, the form an
owner fills in, how a submitted form changes them, and the disco features they imply."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any
from xml.etree.ElementTree import Element

from ...proto.errors import StanzaError
from . import forms

ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"
MUC = "http://jabber.org/protocol/muc"
WHOIS = ("moderators", "anyone")
ALLOW_PM = ("anyone", "participants", "moderators", "none")
MAX_HISTORY = 100


@dataclass(frozen=True, slots=True)
class RoomConfig:
    name: str = ""
    description: str = ""
    persistent: bool = False
    public: bool = True
    members_only: bool = False
    moderated: bool = False
    password: str = ""            # non-empty: password-protected
    whois: str = "moderators"     # who sees occupants' real JIDs (semi-anonymous default)
    max_users: int = 0            # 0: no limit
    history_length: int = 20      # messages kept and offered on join
    change_subject: bool = False  # participants may change the subject
    allow_invites: bool = False   # participants may invite (members-only rooms)
    allow_pm: str = "anyone"      # who may send private messages
    logging: bool = False         # public logging / archive (status 170)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoomConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def non_anonymous(self) -> bool:
        return self.whois == "anyone"

    def features(self) -> list[str]:
        """Room disco features (XEP-0045 §6.4, §17.1)."""
        return [MUC,
                "muc_persistent" if self.persistent else "muc_temporary",
                "muc_public" if self.public else "muc_hidden",
                "muc_membersonly" if self.members_only else "muc_open",
                "muc_moderated" if self.moderated else "muc_unmoderated",
                "muc_passwordprotected" if self.password else "muc_unsecured",
                "muc_nonanonymous" if self.non_anonymous else "muc_semianonymous"]


def _b(x: Element, var: str, value: bool, label: str) -> None:
    forms.boolean(x, f"muc#roomconfig_{var}", value, label)


def to_form(c: RoomConfig) -> Element:
    """The configuration form (XEP-0045 §10.2, example 163)."""
    x = forms.form(ROOMCONFIG, title="Room configuration")
    forms.add(x, "muc#roomconfig_roomname", "text-single", [c.name], "Name")
    forms.add(x, "muc#roomconfig_roomdesc", "text-single", [c.description], "Description")
    _b(x, "persistentroom", c.persistent, "Persistent")
    _b(x, "publicroom", c.public, "Listed in the directory of rooms")
    _b(x, "membersonly", c.members_only, "Members only")
    _b(x, "moderatedroom", c.moderated, "Moderated")
    _b(x, "passwordprotectedroom", bool(c.password), "Password protected")
    forms.add(x, "muc#roomconfig_roomsecret", "text-private", [c.password], "Password")
    forms.add(x, "muc#roomconfig_whois", "list-single", [c.whois], "Who may see real JIDs",
              options=[("Moderators", "moderators"), ("Anyone", "anyone")])
    forms.add(x, "muc#roomconfig_maxusers", "text-single",
              [str(c.max_users) if c.max_users else "none"], "Maximum occupants")
    forms.add(x, "muc#maxhistoryfetch", "text-single", [str(c.history_length)],
              "Messages of history")
    _b(x, "changesubject", c.change_subject, "Occupants may change the subject")
    _b(x, "allowinvites", c.allow_invites, "Occupants may invite")
    forms.add(x, "muc#roomconfig_allowpm", "list-single", [c.allow_pm],
              "Who may send private messages", options=[(v, v) for v in ALLOW_PM])
    _b(x, "enablelogging", c.logging, "Messages are archived")
    return x


def apply_form(c: RoomConfig, x: Element) -> RoomConfig:
    """A submitted form applied to `c`; fields not in the form keep their value.
    Raises StanzaError(not-acceptable) for a value out of range (XEP-0045 §10.2)."""
    v = forms.values(x)
    ftype = v.get("FORM_TYPE")
    if ftype and ftype[0] != ROOMCONFIG:
        raise StanzaError("bad-request", "Not a room configuration form")
    changes: dict[str, Any] = {}

    def text(var: str) -> str | None:
        vals = v.get(var)
        return None if vals is None else (vals[0] if vals else "")

    for var, attr in (("roomname", "name"), ("roomdesc", "description")):
        t = text(f"muc#roomconfig_{var}")
        if t is not None:
            changes[attr] = t.strip()[:200]
    for var, attr in (("persistentroom", "persistent"), ("publicroom", "public"),
                      ("membersonly", "members_only"), ("moderatedroom", "moderated"),
                      ("changesubject", "change_subject"), ("allowinvites", "allow_invites"),
                      ("enablelogging", "logging")):
        if f"muc#roomconfig_{var}" in v:
            changes[attr] = forms.as_bool(v[f"muc#roomconfig_{var}"])
    secret = text("muc#roomconfig_roomsecret")
    protected = v.get("muc#roomconfig_passwordprotectedroom")
    if secret is not None:
        changes["password"] = secret
    if protected is not None and not forms.as_bool(protected):
        changes["password"] = ""
    elif protected is not None and not (changes.get("password", c.password)):
        raise StanzaError("not-acceptable", "A password-protected room needs a password")
    whois = text("muc#roomconfig_whois")
    if whois is not None:
        if whois not in WHOIS:
            raise StanzaError("not-acceptable", "whois is moderators or anyone")
        changes["whois"] = whois
    pm = text("muc#roomconfig_allowpm")
    if pm is not None:
        if pm not in ALLOW_PM:
            raise StanzaError("not-acceptable", "Unknown allowpm value")
        changes["allow_pm"] = pm
    maxu = text("muc#roomconfig_maxusers")
    if maxu is not None:
        changes["max_users"] = _int(maxu, 0, 100000, none_is=0)
    hist = text("muc#maxhistoryfetch")
    if hist is not None:
        changes["history_length"] = _int(hist, 0, MAX_HISTORY, none_is=0)
    return replace(c, **changes)


def _int(text: str, lo: int, hi: int, none_is: int) -> int:
    text = text.strip()
    if text in ("", "none"):
        return none_is
    try:
        n = int(text)
    except ValueError:
        raise StanzaError("not-acceptable", "Not a number") from None
    if not lo <= n <= hi:
        raise StanzaError("not-acceptable", f"Must be between {lo} and {hi}")
    return n
