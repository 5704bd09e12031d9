"""Shared fixtures: one real PostgreSQL per test session (pgserver), a fresh database per test.

The session's server is the same embedded PostgreSQL that `cxgw serve` uses. A template
database is migrated once; each test gets `CREATE DATABASE ... TEMPLATE` (fast) so tests
never see each other's rows.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from cxkernel.config import Config, from_dict

TEMPLATE = "cxgw_template"
_counter = itertools.count()


def _with_db(uri: str, name: str) -> str:
    base, _, query = uri.partition("?")
    return base.rsplit("/", 1)[0] + "/" + name + ("?" + query if query else "")


@pytest.fixture(scope="session")
def pg_admin_uri() -> Iterator[str]:
    """A real PostgreSQL for the whole test session: $CXGW_TEST_DATABASE_URL or pgserver."""
    external = os.environ.get("CXGW_TEST_DATABASE_URL")
    if external:
        yield external
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
        tmp = tempfile.mkdtemp(prefix="cxpg")
        server = pgserver.get_server(Path(tmp), cleanup_mode="stop")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_template(pg_admin_uri: str) -> str:
    """Create and migrate the template database once per session."""
    from gateway.db import migrate

    async def build() -> None:
        conn = await asyncpg.connect(pg_admin_uri)
        try:
            await conn.execute(f'drop database if exists "{TEMPLATE}"')
            await conn.execute(f'create database "{TEMPLATE}"')
        finally:
            await conn.close()
        conn = await asyncpg.connect(_with_db(pg_admin_uri, TEMPLATE))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(build())
    return TEMPLATE


@pytest.fixture
def db_url(pg_admin_uri: str, pg_template: str) -> Iterator[str]:
    """URL of a fresh, migrated database for this test (dropped afterwards)."""
    name = f"t_{os.getpid()}_{next(_counter)}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(pg_admin_uri)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'create database "{name}" template "{pg_template}"'))
    yield _with_db(pg_admin_uri, name)
    asyncio.run(run(f'drop database if exists "{name}" with (force)'))


@pytest.fixture
def cfg_overrides() -> dict[str, dict[str, object]]:
    """Override in a test module to change config sections for its tests."""
    return {}


@pytest.fixture
def cfg(db_url: str, tmp_path: Path, cfg_overrides: dict[str, dict[str, object]]) -> Config:
    """A config on the test database with every listener on port 0 of 127.0.0.1."""
    data: dict[str, dict[str, object]] = {
        "server": {"domain": "cx.example", "state_dir": str(tmp_path / "state")},
        "database": {"url": db_url, "pool_min": 1, "pool_max": 20},
        "listen": {k: "127.0.0.1:0" for k in ("smtp", "submission", "submissions", "imap",
                                              "imaps", "xmpp", "xmpps", "http", "https",
                                              "pop3", "pop3s", "managesieve")},
        "auth": {"lockout_failures": 3, "lockout_seconds": 60},
        # Tests never query the internet's DNS: inbound SPF/DKIM/DMARC is switched on only
        # by the tests that bring their own zone (tests/integration/test_inbound_auth.py).
        "inbound_auth": {"enabled": False},
    }
    for section, values in cfg_overrides.items():
        data.setdefault(section, {}).update(values)
    return from_dict(data)


@pytest.fixture
async def services(cfg: Config) -> AsyncIterator[object]:
    """The shared services (database pool, directory, authenticator) on a fresh database."""
    from gateway.app import open_services
    s = await open_services(cfg)
    try:
        yield s
    finally:
        await s.db.close()


@pytest.fixture
async def server(services: object) -> AsyncIterator[object]:
    """The whole server (every component) on 127.0.0.1 port 0 in this event loop.

    `server.ports["smtp"]` etc. give the bound ports; `server.services` the services."""
    from gateway.app import RunningServer
    srv = RunningServer(services)  # type: ignore[arg-type]
    try:
        await srv.start()
        yield srv
    finally:
        await srv.stop()
