"""Sieve scripts and the vacation history in PostgreSQL (the only SQL of the Sieve package)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

ACCOUNT = "(select id from accounts where address = $1)"


@dataclass(frozen=True)
class ScriptInfo:
    name: str
    active: bool


class SieveRepoError(Exception):
    """A refused change; `code` is the ManageSieve response code (RFC 5804 §1.3)."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code


async def list_scripts(pool: asyncpg.Pool, address: str) -> list[ScriptInfo]:
    rows = await pool.fetch(f"select name, active from sieve_scripts where account_id = {ACCOUNT}"
                            " order by name", address)
    return [ScriptInfo(r["name"], r["active"]) for r in rows]


async def get_script(pool: asyncpg.Pool, address: str, name: str) -> str | None:
    return await pool.fetchval(  # type: ignore[no-any-return]
        f"select content from sieve_scripts where account_id = {ACCOUNT} and name = $2",
        address, name)


async def put_script(pool: asyncpg.Pool, address: str, name: str, content: str,
                     max_scripts: int) -> None:
    async with pool.acquire() as conn, conn.transaction():
        n = await conn.fetchval(
            f"select count(*) filter (where name <> $2) from sieve_scripts"
            f" where account_id = {ACCOUNT}", address, name)
        if n >= max_scripts:  # RFC 5804 §2.6: QUOTA/MAXSCRIPTS
            raise SieveRepoError("QUOTA/MAXSCRIPTS", "Too many scripts")
        await conn.execute(
            f"insert into sieve_scripts(account_id, name, content) values ({ACCOUNT}, $2, $3)"
            " on conflict (account_id, name) do update set content = excluded.content,"
            " updated_at = now()", address, name, content)
        await conn.execute("select pg_notify('sieve_changed', $1)", address)


async def set_active(pool: asyncpg.Pool, address: str, name: str) -> None:
    """Activate `name`, or deactivate every script when `name` is empty (RFC 5804 §2.8)."""
    async with pool.acquire() as conn, conn.transaction():
        aid = await conn.fetchval(ACCOUNT[1:-1], address)
        await conn.execute("update sieve_scripts set active = false where account_id = $1"
                           " and active and name <> $2", aid, name)
        if name:
            done = await conn.execute("update sieve_scripts set active = true"
                                      " where account_id = $1 and name = $2", aid, name)
            if done.endswith(" 0"):
                raise SieveRepoError("NONEXISTENT", "There is no script by that name")
        await conn.execute("select pg_notify('sieve_changed', $1)", address)


async def delete_script(pool: asyncpg.Pool, address: str, name: str) -> None:
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(f"select active from sieve_scripts where account_id = {ACCOUNT}"
                                  " and name = $2 for update", address, name)
        if row is None:
            raise SieveRepoError("NONEXISTENT", "There is no script by that name")
        if row["active"]:  # RFC 5804 §2.10
            raise SieveRepoError("ACTIVE", "You may not delete an active script")
        await conn.execute(f"delete from sieve_scripts where account_id = {ACCOUNT} and name = $2",
                           address, name)


async def rename_script(pool: asyncpg.Pool, address: str, old: str, new: str) -> None:
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchval(f"select 1 from sieve_scripts where account_id = {ACCOUNT}"
                               " and name = $2", address, new):
            raise SieveRepoError("ALREADYEXISTS", "A script with that name exists")  # §2.11.1
        done = await conn.execute(f"update sieve_scripts set name = $3 where account_id ="
                                  f" {ACCOUNT} and name = $2", address, old, new)
        if done.endswith(" 0"):
            raise SieveRepoError("NONEXISTENT", "There is no script by that name")


async def active_scripts(conn: asyncpg.Connection, addresses: list[str]) -> dict[str, str]:
    """address -> active script source, for the recipients that have one."""
    rows = await conn.fetch(
        "select a.address, s.content from sieve_scripts s join accounts a on a.id = s.account_id"
        " where s.active and a.address = any($1::text[])", addresses)
    return {r["address"]: r["content"] for r in rows}


async def vacation_due(conn: asyncpg.Connection, address: str, sender: str, handle: str,
                       days: int) -> bool:
    """Record an answer to `sender` unless one went out within `days`; True if it is due.
    One statement, so two processes delivering at once answer once."""
    got = await conn.fetchval(
        f"insert into sieve_vacation_sent(account_id, sender, handle, sent_at)"
        f" values ({ACCOUNT}, lower($2), $3, now())"
        " on conflict (account_id, sender, handle) do update set sent_at = now()"
        " where sieve_vacation_sent.sent_at < now() - make_interval(days => $4)"
        " returning 1", address, sender, handle, max(1, days))
    return got is not None


async def with_active_script(conn: asyncpg.Connection, addresses: list[str]) -> set[str]:
    """Which of these addresses have an active script (their mail is filtered)."""
    if not addresses:
        return set()
    rows = await conn.fetch(
        "select a.address from accounts a join sieve_scripts s on s.account_id = a.id"
        " and s.active where a.address = any($1::text[])", addresses)
    return {r["address"] for r in rows}


async def srs_secret(conn: asyncpg.Connection) -> bytes:
    """The SRS key shared by every node: made once, kept in the database."""
    import secrets
    await conn.execute("insert into mail_secrets(name, value) values ('srs', $1)"
                       " on conflict (name) do nothing", secrets.token_bytes(32))
    return bytes(await conn.fetchval("select value from mail_secrets where name = 'srs'"))


async def existing_mailboxes(conn: asyncpg.Connection, pairs: list[tuple[str, str]]
                             ) -> set[tuple[str, str]]:
    """Which (address, mailbox name) pairs exist (fileinto never creates a mailbox)."""
    if not pairs:
        return set()
    rows = await conn.fetch(
        "select a.address, m.name from mailboxes m join accounts a on a.id = m.account_id"
        " join unnest($1::text[], $2::text[]) as p(address, name)"
        " on p.address = a.address and p.name = m.name",
        [p[0] for p in pairs], [p[1] for p in pairs])
    return {(r["address"], r["name"]) for r in rows}


async def account_exists(pool: asyncpg.Pool, address: str) -> bool:
    return bool(await pool.fetchval("select 1 from accounts where address = $1", address))
