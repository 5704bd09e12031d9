"""An in-memory snapshot of every local address, for RCPT checks and expansion at line speed.

A circular to 2,700 people must not cost 2,700 database round trips at RCPT time. The
snapshot holds accounts (active flag, quota, usage), aliases and unit lists, is loaded in a
few queries, and is reloaded when the directory changes (LISTEN `directory_changed`) and
every few seconds for mailbox usage. Lookups are pure and synchronous.

Role addresses (RFC 2142; RFC 5321 §4.5.1 requires postmaster): `postmaster@` and
`abuse@` our domain always exist. Unless an account or alias of that name exists, they go
to the accounts named by `mail.postmaster` / `mail.abuse`, by default to the first
unit-admin of the top unit (the first unit without a parent).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import asyncpg

DOCS_SUFFIX = ".docs"
ROLE_NAMES = ("postmaster", "abuse")


@dataclass(frozen=True)
class LocalAccount:
    id: int
    address: str
    active: bool
    quota: int
    used: int
    unit: str
    roles: tuple[str, ...]

    @property
    def over_quota(self) -> bool:
        return self.quota > 0 and self.used >= self.quota


@dataclass(frozen=True)
class Expansion:
    """What one local address expands to."""

    kind: str  # account | alias | unit-list | unit-docs
    accounts: tuple[str, ...] = ()
    external: tuple[str, ...] = ()
    unit: str | None = None


@dataclass
class AddressBook:
    domain: str
    accounts: dict[str, LocalAccount] = field(default_factory=dict)
    aliases: dict[str, list[str]] = field(default_factory=dict)
    units: dict[str, list[str]] = field(default_factory=dict)  # code -> active member addresses
    roles: dict[str, str] = field(default_factory=dict)  # postmaster@dom -> target address
    loaded_at: float = 0.0

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower() == self.domain

    def lookup(self, address: str) -> Expansion | None:
        """Expand a local address (aliases recursively, at most 10 levels); None if unknown."""
        address = address.lower()
        local, _, dom = address.rpartition("@")
        if dom != self.domain:
            return None
        acct = self.accounts.get(address)
        if acct is not None:
            return Expansion("account", (address,) if acct.active else ())
        if address in self.aliases:
            accounts: list[str] = []
            external: list[str] = []
            self._expand(address, accounts, external, 0, set())
            return Expansion("alias", tuple(accounts), tuple(external))
        target = self.roles.get(address)
        if target is not None and target != address:
            exp = self.lookup(target) if target.rpartition("@")[2] == self.domain else None
            if exp is not None:
                return Expansion("alias", exp.accounts, exp.external)
            return Expansion("alias", (), (target,)) if "@" in target else None
        if local.endswith(DOCS_SUFFIX) and local[:-len(DOCS_SUFFIX)] in self.units:
            return Expansion("unit-docs", unit=local[:-len(DOCS_SUFFIX)])
        if local in self.units:
            return Expansion("unit-list", tuple(self.units[local]), unit=local)
        return None

    def _expand(self, address: str, accounts: list[str], external: list[str], depth: int,
                seen: set[str]) -> None:
        if address in seen or depth > 10:
            return
        seen.add(address)
        for target in self.aliases.get(address, ()):
            if target.rpartition("@")[2] != self.domain:
                if target not in external:
                    external.append(target)
                continue
            sub = self.accounts.get(target)
            if sub is not None:
                if sub.active and target not in accounts:
                    accounts.append(target)
            elif target in self.aliases:
                self._expand(target, accounts, external, depth + 1, seen)
            else:
                exp = self.lookup(target)
                if exp is not None:
                    accounts.extend(a for a in exp.accounts if a not in accounts)

    def may_send_as(self, account: str, address: str) -> bool:
        account, address = account.lower(), address.lower()
        return account == address or account in self.aliases.get(address, ())

    def clerks(self, unit: str) -> list[str]:
        """Active clerks of a unit (they handle its official documents)."""
        return [a.address for a in self.accounts.values()
                if a.unit == unit and a.active and "clerk" in a.roles]


def role_targets(domain: str, configured: dict[str, str], top_admin: str | None) -> dict[str, str]:
    """postmaster@/abuse@ -> the configured address (a bare local part gets our domain) or,
    unset, the first unit-admin of the top unit."""
    out = {}
    for role in ROLE_NAMES:
        target = (configured.get(role) or "").strip().lower() or top_admin
        if target:
            out[f"{role}@{domain}"] = target if "@" in target else f"{target}@{domain}"
    return out


async def load(pool: asyncpg.Pool, domain: str,
               roles: dict[str, str] | None = None) -> AddressBook:
    """Read a fresh snapshot (three queries)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "select a.id, a.address, a.status = 'active' as active, a.quota_bytes, u.code,"
            " a.roles, coalesce(m.bytes, 0) as used from accounts a join units u on u.id = a.unit_id"
            " left join mail_usage m on m.account_id = a.id order by a.id")
        aliases = await conn.fetch("select address, target from aliases")
        units = await conn.fetch("select code, parent_id is null as top from units order by id")
    book = AddressBook(domain.lower(), loaded_at=time.monotonic())
    book.units = {r["code"]: [] for r in units}
    for r in rows:
        acct = LocalAccount(r["id"], r["address"], r["active"], r["quota_bytes"], r["used"],
                            r["code"], tuple(r["roles"]))
        book.accounts[acct.address] = acct
        if acct.active:
            book.units[acct.unit].append(acct.address)
    for r in aliases:
        book.aliases.setdefault(r["address"], []).append(r["target"])
    admins = [a for a in book.accounts.values() if a.active and "unit-admin" in a.roles]
    top = next((r["code"] for r in units if r["top"]), None)
    first = next((a.address for a in admins if a.unit == top), None)
    book.roles = role_targets(book.domain, roles or {}, first or
                              next((a.address for a in admins), None))
    return book
