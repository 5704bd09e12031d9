"""Database: the embedded PostgreSQL (pgserver) or an external one, one asyncpg pool, migrations.

By default PostgreSQL runs embedded from the `pgserver` wheel with its data in
``<state_dir>/pg``; a second process (the CLI while the server runs) attaches to the same
instance, and the last process to leave stops it. With ``database.url`` (or
``CXGW_DATABASE_URL``) an external PostgreSQL is used instead.

Migrations are plain SQL files owned by each package (``<package>/migrations/NNNN_name.sql``)
and applied in package order (directory, mailrelay, xmpp), each in its own transaction,
recorded in ``schema_migrations``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from cxkernel.config import Config
from cxkernel.errors import Unavailable

log = logging.getLogger("cxgw.db")

# Packages that own schema, in dependency order (imports point downward).
MIGRATION_PACKAGES = ("directory", "mailrelay", "xmpp")
DB_NAME = "cxgw"


@dataclass(frozen=True)
class Migration:
    component: str
    version: int
    name: str
    sql: str


def discover_migrations() -> list[Migration]:
    """Every migration shipped by the packages, in the order they must be applied."""
    found: list[Migration] = []
    for pkg in MIGRATION_PACKAGES:
        try:
            root = importlib.resources.files(pkg) / "migrations"
        except ModuleNotFoundError:
            continue
        if not root.is_dir():
            continue
        items = []
        for entry in root.iterdir():
            fname = entry.name
            if not fname.endswith(".sql"):
                continue
            num, _, rest = fname.partition("_")
            if not num.isdigit():
                continue
            items.append(Migration(pkg, int(num), rest[:-4], entry.read_text(encoding="utf-8")))
        found.extend(sorted(items, key=lambda m: m.version))
    return found


MIGRATIONS_TABLE = """
create table if not exists schema_migrations (
    component text not null,
    version int not null,
    name text not null,
    applied_at timestamptz not null default now(),
    primary key (component, version)
)"""


async def migrate(conn: asyncpg.Connection) -> list[Migration]:
    """Apply pending migrations; return those applied. Safe to run from several processes."""
    applied: list[Migration] = []
    # One advisory lock so two processes starting together do not race.
    needs_reset = getattr(conn, "needs_reset", None)  # a pool's PoolConnection
    if needs_reset is not None:
        needs_reset()  # a session lock: released in full even if the unlock fails
    await conn.execute("select pg_advisory_lock(727100)")
    try:
        await conn.execute(MIGRATIONS_TABLE)
        done = {(r["component"], r["version"]) for r in await conn.fetch(
            "select component, version from schema_migrations")}
        for m in discover_migrations():
            if (m.component, m.version) in done:
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "insert into schema_migrations(component, version, name) values ($1,$2,$3)",
                    m.component, m.version, m.name)
            applied.append(m)
            log.info("migration applied: %s/%04d_%s", m.component, m.version, m.name)
    finally:
        await conn.execute("select pg_advisory_unlock(727100)")
    return applied


async def migration_status(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every known migration with whether and when it was applied."""
    await conn.execute(MIGRATIONS_TABLE)
    rows = {(r["component"], r["version"]): r["applied_at"] for r in await conn.fetch(
        "select component, version, applied_at from schema_migrations")}
    out = []
    for m in discover_migrations():
        at = rows.get((m.component, m.version))
        out.append({"component": m.component, "version": m.version, "name": m.name,
                    "applied": at is not None, "applied_at": at.isoformat() if at else None})
    return out


def _prune_dead_handles(pgdata: Path) -> None:
    """Drop pids of processes that died without cleanup (kill -9) from pgserver's handle list,
    so the last live process still stops PostgreSQL when it leaves."""
    path = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    alive = []
    for pid in pids:
        try:
            os.kill(int(pid), 0)
            alive.append(pid)
        except (ProcessLookupError, ValueError):
            pass
        except PermissionError:
            alive.append(pid)
    if alive != pids:
        with contextlib.suppress(OSError):
            path.write_text(json.dumps(alive))


class EmbeddedPostgres:
    """A handle on the embedded PostgreSQL in `<state_dir>/pg` (started if not running)."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._server: Any = None

    def start(self) -> str:
        """Start or attach (blocking: call in an executor); return the admin URI."""
        import warnings

        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            import pgserver  # lazily: with an external URL it is never needed

        self.pgdata.mkdir(parents=True, exist_ok=True)
        _prune_dead_handles(self.pgdata)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        return str(self._server.get_uri())

    def stop(self) -> None:
        """Leave; the last process to leave stops PostgreSQL."""
        if self._server is not None:
            server, self._server = self._server, None
            server.cleanup()


def _with_database(uri: str, dbname: str) -> str:
    base, _, query = uri.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + dbname
    return base + ("?" + query if query else "")


class Database:
    """The one asyncpg pool of a process, plus the embedded server handle when embedded."""

    def __init__(self, pool: asyncpg.Pool, url: str, embedded: EmbeddedPostgres | None) -> None:
        self.pool = pool
        self.url = url
        self.embedded = embedded

    @classmethod
    async def open(cls, cfg: Config, *, migrate_schema: bool = True,
                   pool_min: int | None = None, pool_max: int | None = None) -> Database:
        embedded: EmbeddedPostgres | None = None
        loop = asyncio.get_running_loop()
        if cfg.database.url:
            url = cfg.database.url
        else:
            embedded = EmbeddedPostgres(cfg.state_path / "pg")
            try:
                admin = await loop.run_in_executor(None, embedded.start)
            except Exception as exc:
                raise Unavailable("embedded PostgreSQL did not start",
                                  reason=f"pgserver in {embedded.pgdata}: {exc}") from exc
            url = _with_database(admin, DB_NAME)
            await _ensure_database(admin, DB_NAME)
        try:
            pool = await asyncpg.create_pool(
                url, min_size=pool_min or cfg.database.pool_min,
                max_size=pool_max or cfg.database.pool_max, **pool_options())
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            if embedded:
                await loop.run_in_executor(None, embedded.stop)
            raise Unavailable("database is not reachable",
                              reason=f"{_redact(url)}: {exc}") from exc
        db = cls(pool, url, embedded)
        if migrate_schema:
            async with pool.acquire() as conn:
                await migrate(conn)
        return db

    async def close(self) -> None:
        await self.pool.close()
        if self.embedded is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.embedded.stop)


def _jsonb_encode(value: Any) -> bytes:
    return b"\x01" + json.dumps(value, separators=(",", ":")).encode()


def _jsonb_decode(data: bytes) -> Any:
    return json.loads(data[1:])  # jsonb binary format: version byte 1, then JSON text


class PoolConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pool connection that knows whether it may carry session state back to the pool.

    asyncpg resets every connection it takes back with ``SELECT pg_advisory_unlock_all();
    CLOSE ALL; UNLISTEN *; RESET ALL`` (after rolling back an open transaction): one more
    round trip and four statements per ``acquire``, about half of the round trips of an
    IMAP login or SELECT. Our statements leave no session state (``set_config(..., true)``
    is transaction-local; no SET, WITH HOLD cursor or temporary table), so only a
    connection that LISTENed or took a session advisory lock (`needs_reset`) gets that
    reset; the others go back as they are (the open-transaction rollback stays).
    """

    _dirty = False

    def needs_reset(self) -> None:
        """This connection holds session state: reset it fully on release."""
        self._dirty = True

    async def add_listener(self, channel: str, callback: Any) -> None:
        self._dirty = True  # UNLISTEN * on release even if remove_listener never ran
        await super().add_listener(channel, callback)


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """The pool's reset on release (see `PoolConnection`)."""
    if isinstance(conn, PoolConnection) and not conn._dirty:
        return
    if isinstance(conn, PoolConnection):
        conn._dirty = False
    query = conn.get_reset_query()
    if query:
        await conn.execute(query)


def pool_options() -> dict[str, Any]:
    """``asyncpg.create_pool`` keywords of the server's pool (benchmarks use them too)."""
    return {"init": _init_connection, "connection_class": PoolConnection,
            "reset": _reset_connection}


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Binary format so that COPY (used by group commits) can carry jsonb too.
    await conn.set_type_codec("jsonb", encoder=_jsonb_encode, decoder=_jsonb_decode,
                              schema="pg_catalog", format="binary")


async def _ensure_database(admin_uri: str, name: str) -> None:
    conn = await asyncpg.connect(admin_uri)
    try:
        exists = await conn.fetchval("select 1 from pg_database where datname=$1", name)
        if not exists:
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'create database "{name}"')
    finally:
        await conn.close()


def _redact(url: str) -> str:
    """A database URL without its password, for messages and logs."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url
