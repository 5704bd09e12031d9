"""Directory persistence: the only module of `directory` that speaks SQL (asyncpg)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias

import asyncpg

from directory.model import Account, Role, Status, Unit, UnitKind
from directory.scram import ScramKeys

# A connection or a pool's proxy of one (duck-typed alike).
Conn: TypeAlias = Any

UNIT_SELECT = """
select u.id, u.code, u.name, p.code as parent, u.kind,
       (select count(*) from accounts a where a.unit_id = u.id) as members
from units u left join units p on p.id = u.parent_id"""

ACCOUNT_SELECT = """
select a.id, a.address, a.display_name, u.code as unit, a.title, a.roles, a.status,
       a.quota_bytes,
       (select t.locked_until from auth_attempts t
        where t.name = a.address and t.locked_until > now()) as locked_until,
       a.last_login
from accounts a join units u on u.id = a.unit_id"""


def _unit(r: asyncpg.Record) -> Unit:
    return Unit(r["id"], r["code"], r["name"], r["parent"], UnitKind(r["kind"]), r["members"])


def _account(r: asyncpg.Record) -> Account:
    return Account(r["id"], r["address"], r["display_name"], r["unit"], r["title"],
                   tuple(Role(x) for x in r["roles"]), Status(r["status"]), r["quota_bytes"],
                   r["locked_until"], r["last_login"])


async def get_unit(conn: Conn, code: str) -> Unit | None:
    r = await conn.fetchrow(UNIT_SELECT + " where u.code = $1", code)
    return _unit(r) if r else None


async def list_units(conn: Conn) -> list[Unit]:
    return [_unit(r) for r in await conn.fetch(UNIT_SELECT + " order by u.code")]


async def insert_unit(conn: Conn, code: str, name: str, parent_id: int | None, kind: str) -> int:
    return int(await conn.fetchval(
        "insert into units(code, name, parent_id, kind) values ($1,$2,$3,$4) returning id",
        code, name, parent_id, kind))


async def rename_unit(conn: Conn, code: str, name: str) -> bool:
    return await conn.execute("update units set name=$2 where code=$1", code, name) == "UPDATE 1"


async def delete_unit(conn: Conn, unit_id: int) -> None:
    await conn.execute("delete from units where id=$1", unit_id)


async def count_children(conn: Conn, unit_id: int) -> int:
    return int(await conn.fetchval("select count(*) from units where parent_id=$1", unit_id))


async def get_account(conn: Conn, address: str) -> Account | None:
    r = await conn.fetchrow(ACCOUNT_SELECT + " where a.address = $1", address)
    return _account(r) if r else None


async def list_accounts(conn: Conn, unit: str | None = None) -> list[Account]:
    if unit:
        rows = await conn.fetch(ACCOUNT_SELECT + " where u.code=$1 order by a.address", unit)
    else:
        rows = await conn.fetch(ACCOUNT_SELECT + " order by a.address")
    return [_account(r) for r in rows]


async def insert_account(conn: Conn, address: str, name: str, unit_id: int, title: str,
                         roles: Sequence[Role], quota: int) -> int:
    return int(await conn.fetchval(
        "insert into accounts(address, display_name, unit_id, title, roles, quota_bytes)"
        " values ($1,$2,$3,$4,$5,$6) returning id",
        address, name, unit_id, title, [r.value for r in roles], quota))


async def insert_accounts_bulk(conn: Conn, rows: Iterable[tuple[Any, ...]]) -> dict[str, int]:
    """Insert many accounts at once (COPY-speed); return address -> id."""
    rows = list(rows)
    await conn.executemany(
        "insert into accounts(address, display_name, unit_id, title, roles, quota_bytes)"
        " values ($1,$2,$3,$4,$5,$6)", rows)
    ids = await conn.fetch("select id, address from accounts where address = any($1::text[])",
                           [r[0] for r in rows])
    return {r["address"]: r["id"] for r in ids}


async def update_account(conn: Conn, address: str, **fields: Any) -> bool:
    cols = ", ".join(f"{k} = ${i}" for i, k in enumerate(fields, start=2))
    res = await conn.execute(f"update accounts set {cols} where address=$1", address, *fields.values())
    return res == "UPDATE 1"


async def delete_account(conn: Conn, address: str) -> bool:
    return await conn.execute("delete from accounts where address=$1", address) == "DELETE 1"


async def set_credentials(conn: Conn, account_id: int, keys: Iterable[ScramKeys]) -> None:
    await conn.executemany(
        "insert into credentials(account_id, mechanism, salt, iterations, stored_key, server_key)"
        " values ($1,$2,$3,$4,$5,$6) on conflict (account_id, mechanism) do update set"
        " salt=excluded.salt, iterations=excluded.iterations, stored_key=excluded.stored_key,"
        " server_key=excluded.server_key, updated_at=now()",
        [(account_id, k.mechanism, k.salt, k.iterations, k.stored_key, k.server_key) for k in keys])


async def get_login(conn: Conn, address: str, mechanism: str) -> tuple[Account, ScramKeys | None] | None:
    r = await conn.fetchrow(
        ACCOUNT_SELECT.replace("from accounts a", ", c.mechanism, c.salt, c.iterations,"
                               " c.stored_key, c.server_key from accounts a")
        + " left join credentials c on c.account_id = a.id and c.mechanism = $2"
          " where a.address = $1", address, mechanism)
    if r is None:
        return None
    keys = None
    if r["salt"] is not None:
        keys = ScramKeys(r["mechanism"], bytes(r["salt"]), r["iterations"],
                         bytes(r["stored_key"]), bytes(r["server_key"]))
    return _account(r), keys


async def get_login_attempts(conn: Conn, address: str, mechanism: str, window_seconds: float
                             ) -> tuple[tuple[Account, ScramKeys | None] | None, int]:
    """`get_login` and `current_attempts` in one round trip (one snapshot): the login row
    of `address` (None if unknown) and the attempts counted for it in its current window
    (0 when the address is unknown: a cached success needs a known account)."""
    r = await conn.fetchrow(
        ACCOUNT_SELECT.replace("from accounts a", ", c.mechanism, c.salt, c.iterations,"
                               " c.stored_key, c.server_key,"
                               " (select t.attempts from auth_attempts t where t.name = a.address"
                               "  and t.window_start > now() - make_interval(secs => $3))"
                               " as attempts from accounts a")
        + " left join credentials c on c.account_id = a.id and c.mechanism = $2"
          " where a.address = $1", address, mechanism, float(window_seconds))
    if r is None:
        return None, 0
    keys = None
    if r["salt"] is not None:
        keys = ScramKeys(r["mechanism"], bytes(r["salt"]), r["iterations"],
                         bytes(r["stored_key"]), bytes(r["server_key"]))
    return (_account(r), keys), int(r["attempts"] or 0)


async def mark_login(conn: Conn, account_id: int) -> None:
    """A successful login: remember when."""
    await conn.execute("update accounts set last_login=now() where id=$1", account_id)


# -- lockout and penalty (issue #12: decided in ONE statement, equal for every name) ------

async def server_secret(conn: Conn, name: str, candidate: bytes) -> bytes:
    """The secret called `name`, created with `candidate` by whichever node asks first."""
    await conn.execute("insert into auth_secrets(name, secret) values ($1, $2)"
                       " on conflict (name) do nothing", name, candidate)
    return bytes(await conn.fetchval("select secret from auth_secrets where name=$1", name))


async def count_attempt(conn: Conn, name: str, window_seconds: float,
                        network: str, allowance: int) -> tuple[int, int, float]:
    """Count a login attempt for `name` and read the penalty of `network`, atomically.

    Returns (attempts in the current window including this one, recent failures from the
    network, seconds since its last failure). The row lock of the upsert serialises
    parallel attempts: of 40 at once exactly one sees each count, so the caller checks at
    most `lockout_failures` passwords per window.
    """
    r = await conn.fetchrow(
        "with p as (select failures, extract(epoch from now() - last_failure)::float8 as age"
        "           from auth_penalty where ip = $3)"
        " insert into auth_attempts as a (name, window_start, attempts) values ($1, now(), 1)"
        " on conflict (name) do update set"
        "  window_start = case when a.window_start <= now() - make_interval(secs => $2)"
        "                 then now() else a.window_start end,"
        "  attempts = case when a.window_start <= now() - make_interval(secs => $2)"
        "             then 1 else a.attempts + 1 end,"
        "  locked_until = case when a.window_start > now() - make_interval(secs => $2)"
        "                 and a.attempts + 1 > $4"
        "                 then a.window_start + make_interval(secs => $2) end"
        " returning a.attempts, coalesce((select failures from p), 0) as failures,"
        "  coalesce((select age from p), 0) as age",
        name, float(window_seconds), network, allowance)
    return int(r["attempts"]), int(r["failures"]), float(r["age"])


async def record_outcome(conn: Conn, name: str, network: str, ok: bool,
                         penalty_window: float, account_id: int | None = None) -> None:
    """After a check, in one statement: a success clears the name's counter and the
    network's penalty and stamps the account's last login (`account_id`); a failure adds
    to the network's penalty (the name was counted before the check)."""
    if ok:
        await conn.execute(
            "with t as (delete from auth_attempts where name = $1),"
            " p as (delete from auth_penalty where $2 <> '' and ip = $2)"
            " update accounts set last_login = now() where id = $3", name, network, account_id)
        return
    if network:
        await conn.execute(
            "insert into auth_penalty as p (ip, failures, last_failure) values ($1, 1, now())"
            " on conflict (ip) do update set failures = case when p.last_failure <="
            " now() - make_interval(secs => $2) then 1 else p.failures + 1 end,"
            " last_failure = now()", network, float(penalty_window))


async def current_attempts(conn: Conn, name: str, window_seconds: float) -> int:
    """Attempts counted for `name` in its current window (0 when none or over)."""
    n = await conn.fetchval("select attempts from auth_attempts where name=$1 and"
                            " window_start > now() - make_interval(secs => $2)",
                            name, float(window_seconds))
    return int(n or 0)


async def clear_attempts(conn: Conn, name: str) -> None:
    """An admin unlocked the account (enable, new password)."""
    await conn.execute("delete from auth_attempts where name=$1", name)


async def expire_auth_counters(conn: Conn, window_seconds: float, penalty_window: float) -> None:
    """Forget windows and penalties that are over (keeps the tables small under spraying)."""
    await conn.execute("delete from auth_attempts where window_start <"
                       " now() - make_interval(secs => $1)", float(window_seconds))
    await conn.execute("delete from auth_penalty where last_failure <"
                       " now() - make_interval(secs => $1)", float(penalty_window))


async def alias_targets(conn: Conn, address: str) -> list[str]:
    return [r["target"] for r in await conn.fetch(
        "select target from aliases where address=$1 order by target", address)]


async def list_aliases(conn: Conn, target: str | None = None) -> list[tuple[str, str]]:
    if target:
        rows = await conn.fetch("select address, target from aliases where target=$1"
                                " order by address", target)
    else:
        rows = await conn.fetch("select address, target from aliases order by address, target")
    return [(r["address"], r["target"]) for r in rows]


async def insert_alias(conn: Conn, address: str, target: str) -> bool:
    res = await conn.execute("insert into aliases(address, target) values ($1,$2)"
                             " on conflict do nothing", address, target)
    return res == "INSERT 0 1"


async def delete_alias(conn: Conn, address: str, target: str | None) -> int:
    if target:
        res = await conn.execute("delete from aliases where address=$1 and target=$2", address, target)
    else:
        res = await conn.execute("delete from aliases where address=$1", address)
    return int(res.split()[-1])


async def unit_member_addresses(conn: Conn, code: str, active_only: bool = True) -> list[str]:
    q = ("select a.address from accounts a join units u on u.id=a.unit_id where u.code=$1"
         + (" and a.status='active'" if active_only else "") + " order by a.address")
    return [r["address"] for r in await conn.fetch(q, code)]


async def existing_addresses(conn: Conn, addresses: Sequence[str]) -> set[str]:
    rows = await conn.fetch(
        "select address from accounts where address = any($1::text[])"
        " union select address from aliases where address = any($1::text[])", list(addresses))
    return {r["address"] for r in rows}


async def unit_ids(conn: Conn) -> dict[str, int]:
    return {r["code"]: r["id"] for r in await conn.fetch("select id, code from units")}


CREDENTIALS_CHANNEL = "credentials_changed"


async def notify_credentials(conn: Conn, address: str, keep: str = "") -> None:
    """Tell every process, at COMMIT, that `address` has a new password: its sessions
    other than `keep` (a protocol-qualified session id, e.g. ``xmpp:<full jid>``) end."""
    import json
    await conn.execute("select pg_notify($1, $2)", CREDENTIALS_CHANNEL,
                       json.dumps({"address": address, "keep": keep}))


# -- web sessions (/account) ----------------------------------------------------------------

async def create_web_session(conn: Conn, session_id: str, address: str, csrf: str,
                             remote: str, seconds: int) -> None:
    # Expired rows go when their account signs in again (bounded: one per sign-in).
    await conn.execute(
        """delete from web_sessions where expires_at < now() and account_id =
           (select id from accounts where address = $1)""", address)
    await conn.execute(
        """insert into web_sessions(id, account_id, csrf, remote, expires_at)
           select $1, id, $3, $4, now() + make_interval(secs => $5)
           from accounts where address = $2""", session_id, address, csrf, remote, seconds)


async def get_web_session(conn: Conn, session_id: str) -> tuple[str, str] | None:
    """(address, csrf) of a live session, touching it; None if unknown or expired."""
    row = await conn.fetchrow(
        """update web_sessions w set last_seen = now() from accounts a
           where w.id = $1 and a.id = w.account_id and w.expires_at > now()
             and a.status = 'active'
           returning a.address, w.csrf""", session_id)
    return (row["address"], row["csrf"]) if row else None


async def list_web_sessions(conn: Conn, address: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """select w.id, w.remote, w.created_at, w.last_seen from web_sessions w
           join accounts a on a.id = w.account_id
           where a.address = $1 and w.expires_at > now() order by w.created_at""", address)
    return [dict(r) for r in rows]


async def delete_web_sessions(conn: Conn, address: str, keep: str = "") -> None:
    """End `address`'s web sessions but `keep` (a session id); also drops expired rows."""
    await conn.execute(
        """delete from web_sessions where (account_id = (select id from accounts
           where address = $1) and id <> $2) or expires_at < now()""", address, keep)


async def delete_web_session(conn: Conn, session_id: str) -> None:
    await conn.execute("delete from web_sessions where id = $1", session_id)
