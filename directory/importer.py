"""Bulk account import from CSV: validate every row, then apply all rows in ONE transaction.

Columns (header row): address, name, unit, title, role, password. Encodings: utf-8 (a BOM is
accepted), gbk, gb18030. Every bad row is reported with its line number and reason; if any
row is bad nothing is written. SCRAM keys are derived in worker processes (PBKDF2 is
CPU-bound) so 2,700 rows take seconds.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from cxkernel.errors import Invalid
from directory import repo
from directory.model import (
    Role,
    check_name,
    check_password_strength,
    check_unit_code,
    normalise_address,
    parse_roles,
)
from directory.scram import ScramKeys
from directory.service import DOCS_SUFFIX, DirectoryService, keys_for

COLUMNS = ("address", "name", "unit", "title", "role", "password")
ENCODINGS = ("utf-8", "gbk", "gb18030")


@dataclass(frozen=True)
class ImportRow:
    line: int
    address: str
    name: str
    unit: str
    title: str
    roles: tuple[Role, ...]
    password: str | None


@dataclass
class ImportReport:
    rows: list[ImportRow] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    applied: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors


def decode(data: bytes, encoding: str) -> tuple[str | None, list[tuple[int, str]]]:
    """Decode the file; on failure report the first undecodable line."""
    if encoding not in ENCODINGS:
        raise Invalid(f"unsupported encoding {encoding!r} (use {', '.join(ENCODINGS)})")
    codec = "utf-8-sig" if encoding == "utf-8" else encoding
    try:
        return data.decode(codec), []
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        hint = " (is the file GBK? try --encoding gbk)" if encoding == "utf-8" else ""
        return None, [(line, f"bad encoding: not valid {encoding}{hint}")]


def parse(text: str, domain: str, min_password_length: int) -> ImportReport:
    """Check every row on its own (format, names, roles, passwords, duplicates in the file)."""
    report = ImportReport()
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        report.errors.append((1, "empty file"))
        return report
    missing = [c for c in ("address", "name", "unit") if c not in header]
    if missing:
        report.errors.append((1, f"header lacks column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}"))
        return report
    unknown = [c for c in header if c not in COLUMNS]
    if unknown:
        report.errors.append((1, f"unknown column(s) {', '.join(unknown)}"))
        return report
    seen: dict[str, int] = {}
    for values in reader:
        line = reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            report.errors.append((line, f"expected {len(header)} fields, got {len(values)}"))
            continue
        rec = dict(zip(header, values, strict=True))
        try:
            address = normalise_address(rec["address"], domain)
            if address.rpartition("@")[2] != domain:
                raise Invalid(f"address {address} is not in domain {domain}")
            name = check_name(rec["name"])
            unit = check_unit_code(rec["unit"])
            roles = parse_roles(rec.get("role") or None)
            password = rec.get("password") or None
            if password is not None:
                check_password_strength(password, address, min_password_length)
        except Invalid as exc:
            report.errors.append((line, exc.public))
            continue
        if address in seen:
            report.errors.append((line, f"duplicate address {address} (also on line {seen[address]})"))
            continue
        seen[address] = line
        report.rows.append(ImportRow(line, address, name, unit, (rec.get("title") or "").strip(),
                                     roles, password))
    return report


def _derive(args: tuple[str, int]) -> list[ScramKeys]:
    return keys_for(args[0], args[1])


async def derive_all(passwords: list[str], iterations: int,
                     progress: Callable[[int], None] | None = None) -> list[list[ScramKeys]]:
    """SCRAM keys for many passwords using every core; `progress(n)` after each chunk."""
    if not passwords:
        return []
    loop = asyncio.get_running_loop()
    workers = max(1, min(os.cpu_count() or 1, 8))
    chunk = 64
    out: list[list[ScramKeys]] = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [loop.run_in_executor(pool, _derive_chunk, passwords[i:i + chunk], iterations)
                   for i in range(0, len(passwords), chunk)]
        for fut in futures:
            res = await fut
            out.extend(res)
            if progress:
                progress(len(res))
    return out


def _derive_chunk(passwords: list[str], iterations: int) -> list[list[ScramKeys]]:
    return [keys_for(p, iterations) for p in passwords]


async def import_users(service: DirectoryService, data: bytes, encoding: str = "utf-8",
                       dry_run: bool = False,
                       progress: Callable[[str, int, int], None] | None = None) -> ImportReport:
    """Validate the whole file against the directory, then apply it in one transaction."""
    text, errors = decode(data, encoding)
    if text is None:
        return ImportReport(errors=errors)
    s = service.settings
    report = parse(text, s.domain, s.min_password_length)
    async with service.pool.acquire() as conn:
        units = await repo.unit_ids(conn)
        taken = await repo.existing_addresses(conn, [r.address for r in report.rows])
    for r in report.rows:
        local = r.address.split("@", 1)[0]
        if r.unit not in units:
            report.errors.append((r.line, f"unknown unit {r.unit!r}"))
        elif r.address in taken:
            report.errors.append((r.line, f"duplicate: {r.address} already exists"))
        elif local.removesuffix(DOCS_SUFFIX) in units:
            report.errors.append((r.line, f"{r.address} is a unit address"))
    report.errors.sort()
    if report.errors or dry_run:
        return report
    with_pw = [r for r in report.rows if r.password]
    total = len(with_pw)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress("keys", done, total)

    keys = await derive_all([r.password or "" for r in with_pw], s.scram_iterations, tick)
    async with service.pool.acquire() as conn, conn.transaction():
        ids = await repo.insert_accounts_bulk(conn, [
            (r.address, r.name, units[r.unit], r.title, [x.value for x in r.roles], s.default_quota)
            for r in report.rows])
        await conn.executemany(
            "insert into credentials(account_id, mechanism, salt, iterations, stored_key, server_key)"
            " values ($1,$2,$3,$4,$5,$6)",
            [(ids[r.address], k.mechanism, k.salt, k.iterations, k.stored_key, k.server_key)
             for r, ks in zip(with_pw, keys, strict=True) for k in ks])
    if progress:
        progress("rows", len(report.rows), len(report.rows))
    report.applied = True
    return report


async def export_users(service: DirectoryService) -> str:
    """All accounts as CSV with the import columns (passwords are never exported)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    for a in await service.list_users():
        w.writerow([a.address, a.display_name, a.unit, a.title,
                    ",".join(r.value for r in a.roles), ""])
    return out.getvalue()
