"""Directory values (units, accounts, aliases) and the pure rules for addresses and names."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from cxkernel.errors import Invalid
from directory.scram import saslprep


class Role(StrEnum):
    STAFF = "staff"
    CLERK = "clerk"  # handles official documents for the unit
    UNIT_ADMIN = "unit-admin"


class UnitKind(StrEnum):
    CITY = "city"
    TOWNSHIP = "township"


class Status(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


@dataclass(frozen=True)
class Unit:
    id: int
    code: str
    name: str
    parent: str | None
    kind: UnitKind
    members: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"code": self.code, "name": self.name, "parent": self.parent,
                "kind": self.kind.value, "members": self.members}


@dataclass(frozen=True)
class Account:
    id: int
    address: str
    display_name: str
    unit: str
    title: str
    roles: tuple[Role, ...]
    status: Status
    quota_bytes: int
    locked_until: datetime | None = None
    last_login: datetime | None = None
    aliases: tuple[str, ...] = field(default=())

    @property
    def active(self) -> bool:
        return self.status is Status.ACTIVE

    def has_role(self, role: Role) -> bool:
        return role in self.roles

    def as_dict(self) -> dict[str, object]:
        return {"address": self.address, "name": self.display_name, "unit": self.unit,
                "title": self.title, "roles": [r.value for r in self.roles],
                "status": self.status.value, "quota_bytes": self.quota_bytes,
                "locked_until": self.locked_until.isoformat() if self.locked_until else None,
                "last_login": self.last_login.isoformat() if self.last_login else None}


UNIT_CODE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# A conservative dot-atom local part (RFC 5321 §4.1.2) without quoting, '%' or '!' tricks.
LOCAL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._+-]{0,62}[a-z0-9])?$")
DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def normalise_address(address: str, domain: str) -> str:
    """Lower-case `address`, append `@domain` to a bare local part, and validate it.

    Raises Invalid for anything a mail system should not accept as a mailbox name.
    """
    addr = address.strip().lower()
    if "@" not in addr:
        addr = f"{addr}@{domain}"
    local, _, dom = addr.rpartition("@")
    if not LOCAL_RE.match(local) or ".." in local:
        raise Invalid(f"malformed address {address!r}: bad local part")
    if not DOMAIN_RE.match(dom):
        raise Invalid(f"malformed address {address!r}: bad domain")
    return addr


def check_unit_code(code: str) -> str:
    code = code.strip().lower()
    if not UNIT_CODE_RE.match(code):
        raise Invalid(f"bad unit code {code!r}: use a-z, 0-9 and '-', at most 63 characters")
    return code


# Characters that change how a terminal or an editor shows text: bidi embeddings and
# overrides (the "Trojan Source" set), line and paragraph separators. C0/C1/DEL are
# Unicode category Cc; ANSI escapes start with ESC (C0), 8-bit CSI is C1.
_INVISIBLE_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                                "\u2028\u2029\u2066\u2067\u2068\u2069")
# OWASP "CSV injection": a cell starting with one of these runs as a spreadsheet formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def is_control(c: str) -> bool:
    """C0, DEL, C1 (CR, LF, NUL, ESC of ANSI escapes included), bidi controls, separators."""
    return unicodedata.category(c) == "Cc" or c in _INVISIBLE_CONTROLS


def escape_controls(text: str) -> str:
    """Show control characters as escapes (`\\x1b`, `\\u202e`) so that legacy data printed
    to a terminal cannot move the cursor, recolour, or hide text."""
    if not any(is_control(c) or c == "\\" for c in text):
        return text
    out = []
    for c in text:
        if c == "\\":
            out.append("\\\\")
        elif is_control(c):
            out.append(f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return "".join(out)


def check_text(value: str, what: str, *, allow_empty: bool = False, max_len: int = 200) -> str:
    """The one rule for names and titles (service layer: CLI, import and any API share it):
    no control characters, no formula prefix, whitespace runs collapsed, bounded length."""
    bad = next((c for c in value if is_control(c)), None)
    if bad is not None:
        raise Invalid(f"{what} contains a control character ({escape_controls(bad)})")
    clean = " ".join(value.split())
    if not clean and not allow_empty:
        raise Invalid(f"{what} is empty")
    if len(clean) > max_len:
        raise Invalid(f"{what} is longer than {max_len} characters")
    if clean.startswith(FORMULA_PREFIXES):
        raise Invalid(f"{what} starts with {clean[0]!r}, which spreadsheets run as a formula")
    return clean


def check_name(name: str, what: str = "name") -> str:
    """Display names in any script (Chinese is the norm); refuse empty, absurd or control chars."""
    return check_text(name, what)


def check_title(title: str) -> str:
    """Job titles: like names, but may be empty."""
    return check_text(title, "title", allow_empty=True)


def parse_roles(values: list[str] | tuple[str, ...] | str | None) -> tuple[Role, ...]:
    if values is None or values == "":
        return (Role.STAFF,)
    if isinstance(values, str):
        values = [v for v in re.split(r"[,;| ]+", values) if v]
    roles: list[Role] = []
    for v in values:
        try:
            role = Role(v.strip().lower())
        except ValueError:
            raise Invalid(f"unknown role {v!r} (staff, clerk, unit-admin)") from None
        if role not in roles:
            roles.append(role)
    return tuple(roles) or (Role.STAFF,)


def check_password_strength(password: str, address: str, min_length: int) -> None:
    """Refuse passwords an attacker would guess first, and control characters (SASLprep,
    RFC 4013 §2.3, prohibits them: such a password could never be used to log in)."""
    if any(unicodedata.category(c) == "Cc" for c in password):
        raise Invalid("password contains a control character")
    try:
        saslprep(password)  # the same preparation key derivation does: no surprise later
    except ValueError:
        raise Invalid("password contains a character SASLprep prohibits") from None
    if len(password) < min_length:
        raise Invalid(f"weak password: shorter than {min_length} characters")
    if len(set(password)) < 3:
        raise Invalid("weak password: too few distinct characters")
    local = address.split("@", 1)[0]
    if password.lower() in (local, address, local.replace(".", "")):
        raise Invalid("weak password: same as the address")
    if password.lower() in {"password", "12345678", "123456789", "1234567890", "qwertyui",
                            "11111111", "88888888", "abcd1234", "password1", "admin123"}:
        raise Invalid("weak password: too common")
