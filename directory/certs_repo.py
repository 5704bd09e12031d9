"""Certificate persistence: the only SQL of the CA/RA (tables `ca` and `certificates`).

Keys arrive here already encrypted (PKCS#8 with the CA passphrase); this module never
sees a clear private key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

# asyncpg.Connection or a pool's PoolConnectionProxy: the union is not valid as a
# type (the proxy is not a Connection subclass), and asyncpg ships no stubs.
Conn: TypeAlias = Any


@dataclass(frozen=True)
class CaRow:
    cert_pem: bytes
    key_pem: bytes
    key_type: str
    revision: int


@dataclass(frozen=True)
class CertRow:
    serial: str
    kind: str
    unit_code: str | None
    address: str
    subject: str
    cert_der: bytes
    key_type: str
    not_before: datetime
    not_after: datetime
    status: str
    revoked_at: datetime | None
    reason: int | None
    created_at: datetime
    has_key: bool


CERT_SELECT = """
select serial, kind, unit_code, address, subject, cert_der, key_type, not_before, not_after,
       status, revoked_at, reason, created_at, key_pem is not null as has_key
from certificates"""


CERT_SELECT_KEY = CERT_SELECT.replace("\nfrom certificates", ", key_pem\nfrom certificates")


def _cert(r: asyncpg.Record) -> CertRow:
    return CertRow(r["serial"], r["kind"], r["unit_code"], r["address"], r["subject"],
                   bytes(r["cert_der"]), r["key_type"], r["not_before"], r["not_after"],
                   r["status"], r["revoked_at"], r["reason"], r["created_at"], r["has_key"])


async def get_ca(conn: Conn) -> CaRow | None:
    r = await conn.fetchrow("select cert_pem, key_pem, key_type, revision from ca where id = 1")
    if r is None:
        return None
    return CaRow(bytes(r["cert_pem"]), bytes(r["key_pem"]), r["key_type"], r["revision"])


async def revision(conn: Conn) -> int:
    """The CA revision (0 when there is no CA yet): changes on every issue and revocation."""
    return int(await conn.fetchval("select coalesce((select revision from ca where id = 1), 0)"))


async def insert_ca(conn: Conn, cert_pem: bytes, key_pem: bytes, key_type: str) -> bool:
    res = await conn.execute("insert into ca(id, cert_pem, key_pem, key_type) values (1, $1, $2, $3)"
                             " on conflict do nothing", cert_pem, key_pem, key_type)
    return res.endswith("1")


async def bump_revision(conn: Conn) -> None:
    await conn.execute("update ca set revision = revision + 1 where id = 1")


async def insert_certificate(conn: Conn, *, serial: str, kind: str, unit_code: str | None,
                             address: str, subject: str, cert_der: bytes, key_pem: bytes | None,
                             key_type: str, not_before: datetime, not_after: datetime) -> None:
    await conn.execute(
        "insert into certificates(serial, kind, unit_code, address, subject, cert_der, key_pem,"
        " key_type, not_before, not_after) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        serial, kind, unit_code, address, subject, cert_der, key_pem, key_type, not_before,
        not_after)
    await bump_revision(conn)


async def get_certificate(conn: Conn, serial: str) -> CertRow | None:
    r = await conn.fetchrow(CERT_SELECT + " where serial = $1", serial)
    return _cert(r) if r else None


async def list_certificates(conn: Conn, *, kind: str | None = None, unit: str | None = None,
                            address: str | None = None) -> list[CertRow]:
    rows = await conn.fetch(
        CERT_SELECT + " where ($1::text is null or kind = $1) and ($2::text is null or"
        " unit_code = $2) and ($3::text is null or address = $3) order by created_at, serial",
        kind, unit, address)
    return [_cert(r) for r in rows]


async def current_with_key(conn: Conn, *, kind: str, unit: str | None = None,
                           address: str | None = None) -> tuple[CertRow, bytes] | None:
    """The newest valid, unexpired certificate (and its encrypted key) of a unit or person."""
    r = await conn.fetchrow(
        CERT_SELECT_KEY + " where kind = $1 and ($2::text is null or unit_code = $2) and ($3::text is null or"
        " address = $3) and status = 'valid' and key_pem is not null and not_after > now()"
        " order by not_before desc, created_at desc limit 1", kind, unit, address)
    if r is None:
        return None
    return _cert(r), bytes(r["key_pem"])


async def revoke(conn: Conn, serial: str, at: datetime, reason: int) -> bool:
    res = await conn.execute("update certificates set status = 'revoked', revoked_at = $2,"
                             " reason = $3 where serial = $1 and status = 'valid'",
                             serial, at, reason)
    if res.endswith(" 1"):
        await bump_revision(conn)
        return True
    return False


async def revocations(conn: Conn) -> list[tuple[str, datetime, int]]:
    rows = await conn.fetch("select serial, revoked_at, reason from certificates"
                            " where status = 'revoked' order by revoked_at, serial")
    return [(r["serial"], r["revoked_at"], r["reason"] or 0) for r in rows]


async def unit_name(conn: Conn, code: str) -> str | None:
    value: Any = await conn.fetchval("select name from units where code = $1", code)
    return value


async def account_identity(conn: Conn, address: str) -> tuple[str, str] | None:
    """(display name, unit code) of an account."""
    r = await conn.fetchrow("select a.display_name, u.code from accounts a join units u"
                            " on u.id = a.unit_id where a.address = $1", address)
    return (r["display_name"], r["code"]) if r else None


async def revoke_personal_of(conn: Conn, address: str, at: datetime, reason: int) -> list[str]:
    """Revoke every valid personal certificate of ``address`` (issue #11 item 5: a
    disabled, removed or moved person no longer speaks for a unit); their serials."""
    rows = await conn.fetch("update certificates set status = 'revoked', revoked_at = $2,"
                            " reason = $3, key_pem = null where address = $1 and"
                            " kind = 'personal' and status = 'valid' returning serial",
                            address, at, reason)
    if rows:
        await bump_revision(conn)
    return [r["serial"] for r in rows]


async def destroy_key(conn: Conn, serial: str) -> None:
    """Keys of revoked certificates are destroyed (issue #11 item 9)."""
    await conn.execute("update certificates set key_pem = null where serial = $1"
                       " and status = 'revoked'", serial)


async def set_compromised_at(conn: Conn, serial: str, at: datetime) -> None:
    await conn.execute("update certificates set compromised_at = $2 where serial = $1",
                       serial, at)


async def compromised(conn: Conn) -> list[tuple[str, datetime | None]]:
    """Certificates revoked for key compromise (RFC 5280 reason 1) and since when."""
    rows = await conn.fetch("select serial, compromised_at from certificates"
                            " where status = 'revoked' and reason = 1 order by revoked_at")
    return [(r["serial"], r["compromised_at"]) for r in rows]


async def replace_key(conn: Conn, serial: str | None, old_pem: bytes, new_pem: bytes) -> None:
    """Swap a stored encrypted key for its re-encrypted form (only if unchanged)."""
    if serial is None:
        await conn.execute("update ca set key_pem = $2 where id = 1 and key_pem = $1",
                           old_pem, new_pem)
    else:
        await conn.execute("update certificates set key_pem = $3 where serial = $1"
                           " and key_pem = $2", serial, old_pem, new_pem)
