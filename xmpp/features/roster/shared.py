"""Shared roster groups from the directory: read-only 'both' items.

Everyone sees the members of their own unit in a group named after the unit (its Chinese
name); with ``xmpp.directory_groups = "all"``, every account is listed in a group named
after its unit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ...dircache import Snapshot


@dataclass(frozen=True, slots=True)
class SharedItem:
    jid: str
    name: str
    group: str


def shared_items(snapshot: Snapshot, owner: str, mode: str) -> dict[str, SharedItem]:
    """The directory-derived items of `owner` (never including `owner`)."""
    me = snapshot.accounts.get(owner)
    if me is None:
        return {}
    units = snapshot.members if mode == "all" else {me.unit: snapshot.members.get(me.unit, ())}
    out: dict[str, SharedItem] = {}
    for code, members in units.items():
        group = snapshot.units.get(code, code)
        for jid in members:
            if jid != owner:
                acct = snapshot.accounts[jid]
                out[jid] = SharedItem(jid, acct.display_name, group)
    return out


def is_shared_contact(snapshot: Snapshot, owner: str, contact: str, mode: str) -> bool:
    a, b = snapshot.accounts.get(owner), snapshot.accounts.get(contact)
    if a is None or b is None or owner == contact:
        return False
    return mode == "all" or a.unit == b.unit


def digest(items: dict[str, SharedItem]) -> str:
    """A short, restart-stable version tag of the shared items (roster versioning)."""
    h = hashlib.sha1()
    for jid in sorted(items):
        it = items[jid]
        h.update(f"{it.jid}\0{it.name}\0{it.group}\n".encode())
    return h.hexdigest()[:10]
