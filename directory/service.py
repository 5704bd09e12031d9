"""Directory service: every change to units, accounts and aliases goes through here.

The CLI, the import, the demo seed and the protocol servers share these functions; none of
them writes SQL. Each public method runs in one transaction, so nothing is half-applied.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from cxkernel.errors import Conflict, Invalid, NotFound
from directory import certs_repo, repo
from directory.model import (
    Account,
    Status,
    Unit,
    UnitKind,
    check_name,
    check_password_strength,
    check_title,
    check_unit_code,
    normalise_address,
    parse_roles,
)
from directory.scram import HASHES, ScramKeys, derive_keys

AFFILIATION_CHANGED = 3  # RFC 5280 §5.3.1 CRLReason
CESSATION_OF_OPERATION = 5

DOCS_SUFFIX = ".docs"


@dataclass(frozen=True)
class DirectorySettings:
    """The static settings the directory needs (built by `gateway` from the config)."""

    domain: str = "cx.example"
    scram_iterations: int = 4096
    min_password_length: int = 8
    lockout_failures: int = 5
    lockout_seconds: int = 900
    default_quota: int = 1024 * 1024 * 1024
    auth_cache_seconds: int = 300
    penalty_max_seconds: float = 15.0
    penalty_free_failures: int = 3
    penalty_window: int = 900


@dataclass(frozen=True)
class Recipient:
    """What a local address means: an account, an alias, a unit list or a unit's document inbox.

    `accounts` are the final local mailboxes; `external` are outside addresses an alias
    points to; `unit` is set for unit lists and document inboxes.
    """

    address: str
    kind: str  # "account" | "alias" | "unit-list" | "unit-docs"
    accounts: tuple[str, ...] = ()
    external: tuple[str, ...] = ()
    unit: str | None = None


def keys_for(password: str, iterations: int) -> list[ScramKeys]:
    """SCRAM-SHA-1 and SCRAM-SHA-256 keys for one password (CPU-heavy: use an executor)."""
    return [derive_keys(mech, password, iterations=iterations) for mech in HASHES]


class DirectoryService:
    def __init__(self, pool: asyncpg.Pool, settings: DirectorySettings) -> None:
        self.pool = pool
        self.settings = settings

    @property
    def domain(self) -> str:
        return self.settings.domain

    def address(self, address: str) -> str:
        return normalise_address(address, self.domain)

    async def _keys(self, password: str) -> list[ScramKeys]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, keys_for, password, self.settings.scram_iterations)

    # ---- units -------------------------------------------------------------------------
    async def add_unit(self, code: str, name: str, parent: str | None = None,
                       township: bool = False) -> Unit:
        code = check_unit_code(code)
        name = check_name(name, "unit name")
        async with self.pool.acquire() as conn, conn.transaction():
            if await repo.get_unit(conn, code):
                raise Conflict(f"unit {code!r} already exists")
            parent_id = None
            if parent:
                p = await repo.get_unit(conn, check_unit_code(parent))
                if p is None:
                    raise NotFound(f"unknown parent unit {parent!r}")
                parent_id = p.id
            await self._check_free(conn, f"{code}@{self.domain}", f"unit {code!r} list address")
            kind = UnitKind.TOWNSHIP if township else UnitKind.CITY
            await repo.insert_unit(conn, code, name, parent_id, kind.value)
            unit = await repo.get_unit(conn, code)
        assert unit is not None
        return unit

    async def list_units(self) -> list[Unit]:
        async with self.pool.acquire() as conn:
            return await repo.list_units(conn)

    async def get_unit(self, code: str) -> Unit:
        async with self.pool.acquire() as conn:
            unit = await repo.get_unit(conn, check_unit_code(code))
        if unit is None:
            raise NotFound(f"unknown unit {code!r}")
        return unit

    async def rename_unit(self, code: str, name: str) -> Unit:
        name = check_name(name, "unit name")
        async with self.pool.acquire() as conn:
            if not await repo.rename_unit(conn, check_unit_code(code), name):
                raise NotFound(f"unknown unit {code!r}")
        return await self.get_unit(code)

    async def remove_unit(self, code: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            unit = await repo.get_unit(conn, check_unit_code(code))
            if unit is None:
                raise NotFound(f"unknown unit {code!r}")
            if unit.members:
                raise Conflict(f"unit {code!r} still has {unit.members} members; move or remove them first")
            if await repo.count_children(conn, unit.id):
                raise Conflict(f"unit {code!r} still has sub-units")
            await repo.delete_unit(conn, unit.id)

    # ---- accounts ----------------------------------------------------------------------
    async def _check_free(self, conn: repo.Conn, address: str, what: str) -> None:
        """Refuse an address already taken by an account, an alias or a unit address."""
        local = address.split("@", 1)[0]
        unit_code = local.removesuffix(DOCS_SUFFIX)
        if await repo.get_account(conn, address) or await repo.alias_targets(conn, address):
            raise Conflict(f"{what}: {address} is already taken")
        if address.endswith("@" + self.domain) and await repo.get_unit(conn, unit_code):
            raise Conflict(f"{what}: {address} is a unit address")

    async def add_user(self, address: str, unit: str, name: str, title: str = "",
                       roles: list[str] | tuple[str, ...] | str | None = None,
                       password: str | None = None, quota: int | None = None) -> Account:
        address = self.address(address)
        name = check_name(name)
        title = check_title(title)
        role_t = parse_roles(roles)
        if password is not None:
            check_password_strength(password, address, self.settings.min_password_length)
        keys = await self._keys(password) if password is not None else []
        async with self.pool.acquire() as conn, conn.transaction():
            u = await repo.get_unit(conn, check_unit_code(unit))
            if u is None:
                raise NotFound(f"unknown unit {unit!r}")
            await self._check_free(conn, address, "account")
            account_id = await repo.insert_account(
                conn, address, name, u.id, title, role_t,
                quota or self.settings.default_quota)
            if keys:
                await repo.set_credentials(conn, account_id, keys)
            acct = await repo.get_account(conn, address)
        assert acct is not None
        return acct

    async def get_user(self, address: str) -> Account:
        address = self.address(address)
        async with self.pool.acquire() as conn:
            acct = await repo.get_account(conn, address)
            if acct is None:
                raise NotFound(f"no such account {address}")
            owned = tuple(a for a, _t in await repo.list_aliases(conn, target=address))
        return Account(**{**acct.__dict__, "aliases": owned})

    async def list_users(self, unit: str | None = None) -> list[Account]:
        async with self.pool.acquire() as conn:
            if unit and not await repo.get_unit(conn, check_unit_code(unit)):
                raise NotFound(f"unknown unit {unit!r}")
            return await repo.list_accounts(conn, check_unit_code(unit) if unit else None)

    async def set_password(self, address: str, password: str) -> None:
        address = self.address(address)
        check_password_strength(password, address, self.settings.min_password_length)
        keys = await self._keys(password)
        async with self.pool.acquire() as conn, conn.transaction():
            acct = await repo.get_account(conn, address)
            if acct is None:
                raise NotFound(f"no such account {address}")
            await repo.set_credentials(conn, acct.id, keys)
            await repo.update_account(conn, address, failed_logins=0, locked_until=None)
            await repo.clear_attempts(conn, address)

    async def _update(self, address: str, **fields: Any) -> Account:
        address = self.address(address)
        async with self.pool.acquire() as conn, conn.transaction():
            if not await repo.update_account(conn, address, **fields):
                raise NotFound(f"no such account {address}")
            acct = await repo.get_account(conn, address)
        assert acct is not None
        return acct

    async def disable_user(self, address: str) -> Account:
        acct = await self._update(address, status=Status.DISABLED.value)
        await self._revoke_certificates(acct.address, CESSATION_OF_OPERATION)
        return acct

    async def _revoke_certificates(self, address: str, reason: int) -> None:
        """Issue #11 item 5: a person disabled, removed or moved loses the personal
        certificates that made them speak for their unit (RFC 5280 §5.3.1 reason)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await certs_repo.revoke_personal_of(conn, address, datetime.now(UTC), reason)

    async def enable_user(self, address: str) -> Account:
        acct = await self._update(address, status=Status.ACTIVE.value, failed_logins=0,
                                  locked_until=None)
        async with self.pool.acquire() as conn:
            await repo.clear_attempts(conn, acct.address)
        return acct

    async def update_user(self, address: str, *, name: str | None = None,
                          title: str | None = None, roles: str | list[str] | None = None,
                          quota: int | None = None) -> Account:
        fields: dict[str, Any] = {}
        if name is not None:
            fields["display_name"] = check_name(name)
        if title is not None:
            fields["title"] = check_title(title)
        if roles is not None:
            fields["roles"] = [r.value for r in parse_roles(roles)]
        if quota is not None:
            if quota < 0:
                raise Invalid("quota must not be negative")
            fields["quota_bytes"] = quota
        if not fields:
            return await self.get_user(address)
        return await self._update(address, **fields)

    async def move_user(self, address: str, unit: str) -> Account:
        async with self.pool.acquire() as conn:
            u = await repo.get_unit(conn, check_unit_code(unit))
        if u is None:
            raise NotFound(f"unknown unit {unit!r}")
        before = await self.get_user(address)
        acct = await self._update(address, unit_id=u.id)
        if before.unit != acct.unit:
            await self._revoke_certificates(acct.address, AFFILIATION_CHANGED)
        return acct

    async def remove_user(self, address: str) -> None:
        address = self.address(address)
        async with self.pool.acquire() as conn, conn.transaction():
            if not await repo.delete_account(conn, address):
                raise NotFound(f"no such account {address}")
            await conn.execute("delete from aliases where target=$1", address)
            await certs_repo.revoke_personal_of(conn, address, datetime.now(UTC),
                                                CESSATION_OF_OPERATION)

    # ---- aliases -----------------------------------------------------------------------
    async def add_alias(self, address: str, target: str) -> None:
        address = self.address(address)
        if "@" not in target:
            target = f"{target}@{self.domain}"
        target = normalise_address(target, self.domain)
        if address == target:
            raise Invalid("an alias cannot point to itself")
        async with self.pool.acquire() as conn, conn.transaction():
            if await repo.get_account(conn, address):
                raise Conflict(f"{address} is an account, not an alias")
            local = address.split("@", 1)[0].removesuffix(DOCS_SUFFIX)
            if address.endswith("@" + self.domain) and await repo.get_unit(conn, local):
                raise Conflict(f"{address} is a unit address")
            if target.endswith("@" + self.domain) and not (
                    await repo.get_account(conn, target) or await repo.alias_targets(conn, target)
                    or await repo.get_unit(conn, target.split("@")[0].removesuffix(DOCS_SUFFIX))):
                raise NotFound(f"alias target {target} is not a local address")
            if not await repo.insert_alias(conn, address, target):
                raise Conflict(f"alias {address} -> {target} already exists")

    async def remove_alias(self, address: str, target: str | None = None) -> int:
        address = self.address(address)
        if target and "@" not in target:
            target = f"{target}@{self.domain}"
        async with self.pool.acquire() as conn:
            n = await repo.delete_alias(conn, address, target.lower() if target else None)
        if not n:
            raise NotFound(f"no such alias {address}")
        return n

    async def list_aliases(self, target: str | None = None) -> list[tuple[str, str]]:
        async with self.pool.acquire() as conn:
            return await repo.list_aliases(conn, self.address(target) if target else None)

    # ---- mail routing ------------------------------------------------------------------
    def is_local_domain(self, domain: str) -> bool:
        return domain.lower() == self.domain

    async def resolve(self, address: str, _depth: int = 0) -> Recipient | None:
        """What a local address expands to, or None if it is unknown.

        Aliases expand recursively (at most 10 levels); a unit list `<code>@domain` expands
        to the unit's active members; `<code>.docs@domain` is the unit's document inbox.
        """
        address = address.lower()
        local, _, dom = address.rpartition("@")
        if dom != self.domain:
            return None
        async with self.pool.acquire() as conn:
            acct = await repo.get_account(conn, address)
            if acct is not None:
                return Recipient(address, "account", (address,) if acct.active else ())
            targets = await repo.alias_targets(conn, address)
            if not targets:
                if local.endswith(DOCS_SUFFIX) and await repo.get_unit(conn, local[:-len(DOCS_SUFFIX)]):
                    return Recipient(address, "unit-docs", unit=local[:-len(DOCS_SUFFIX)])
                if await repo.get_unit(conn, local):
                    members = await repo.unit_member_addresses(conn, local)
                    return Recipient(address, "unit-list", tuple(members), unit=local)
                return None
        accounts: list[str] = []
        external: list[str] = []
        for t in targets:
            if t.rpartition("@")[2] != self.domain:
                external.append(t)
                continue
            if _depth >= 10:
                continue
            sub = await self.resolve(t, _depth + 1)
            if sub is not None:
                accounts.extend(a for a in sub.accounts if a not in accounts)
                external.extend(e for e in sub.external if e not in external)
        return Recipient(address, "alias", tuple(accounts), tuple(external))

    async def may_send_as(self, account: str, address: str) -> bool:
        """A user may send as their own address or an alias that points to them."""
        account, address = account.lower(), address.lower()
        if account == address:
            return True
        async with self.pool.acquire() as conn:
            return account in await repo.alias_targets(conn, address)
