"""Bulk account import from CSV: validate every row, then apply all rows in ONE transaction.

Columns (header row): address, name, unit, title, role, password. Encodings: utf-8 (a BOM is
accepted), gbk, gb18030, or auto (detected line by line); a line in another encoding than
the file's is reported, never silently garbled. Every bad row is reported with its line
number and reason; if any row is bad nothing is written. The dry run and the real import
run the same checks (`parse` + the directory checks); only the writing differs.
Export neutralises spreadsheet formulas (OWASP CSV injection) and shows control characters
escaped. SCRAM keys are derived in worker processes (PBKDF2 is
CPU-bound) so 2,700 rows take seconds.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cxkernel.errors import Invalid
from directory import repo
from directory.model import (
    FORMULA_PREFIXES,
    Role,
    check_name,
    check_password_strength,
    check_title,
    check_unit_code,
    escape_controls,
    normalise_address,
    parse_roles,
)
from directory.scram import ScramKeys
from directory.service import DOCS_SUFFIX, DirectoryService, keys_for

COLUMNS = ("address", "name", "unit", "title", "role", "password")
ENCODINGS = ("utf-8", "gbk", "gb18030", "auto")
_BOM = b"\xef\xbb\xbf"
_GB = ("gbk", "gb18030")


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


def _kind(line: bytes, gb: str) -> str:
    """ascii, utf-8 (with non-ASCII text), gb (GBK/GB18030 only) or bad."""
    if line.isascii():
        return "ascii"
    try:
        line.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        line.decode(gb)
        return "gb"
    except UnicodeDecodeError:
        return "bad"


def decode(data: bytes, encoding: str) -> tuple[str | None, list[tuple[int, str]]]:
    """Decode line by line and report every line that is not in the file's encoding.

    `auto` takes the encoding most non-ASCII lines have (UTF-8 on a tie). A UTF-8 line in a
    GBK file (or the reverse) is reported, not decoded into mojibake; the physical line
    numbers match those of the CSV reader.
    """
    if encoding not in ENCODINGS:
        raise Invalid(f"unsupported encoding {encoding!r} (use {', '.join(ENCODINGS)})")
    bom = data.startswith(_BOM)
    if bom:
        data = data[len(_BOM):]
    gb = encoding if encoding in _GB else "gb18030"
    lines = data.split(b"\n")
    kinds = [_kind(line, gb) for line in lines]
    if encoding == "auto":
        n_utf8, n_gb = kinds.count("utf-8"), kinds.count("gb")
        encoding = "gb18030" if n_gb > n_utf8 and not bom else "utf-8"
        gb = "gb18030"
    errors: list[tuple[int, str]] = []
    for no, kind in enumerate(kinds, 1):
        if kind == "bad":
            errors.append((no, f"bad encoding: neither UTF-8 nor {gb.upper()}"))
        elif kind == "gb" and encoding == "utf-8":
            errors.append((no, "bad encoding: not valid UTF-8 (is the file GBK? try --encoding"
                               " gbk, or re-save every line in one encoding)"))
        elif kind == "utf-8" and encoding in _GB:
            errors.append((no, f"bad encoding: a UTF-8 line in a {encoding.upper()} file"
                               " (re-save every line in one encoding)"))
    if bom and encoding in _GB:
        errors.insert(0, (1, f"bad encoding: a UTF-8 byte order mark in a {encoding.upper()} file"))
    if errors:
        return None, errors
    return "\n".join(line.decode(encoding) for line in lines), []


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
    for values in _rows(reader, report):
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
            title = check_title(rec.get("title") or "")
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
        report.rows.append(ImportRow(line, address, name, unit, title, roles, password))
    return report


def _rows(reader: Any, report: ImportReport) -> Iterator[list[str]]:
    """The CSV rows; a row the csv module cannot read (an over-long field, say) ends the
    file as a numbered error instead of a traceback."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            report.errors.append((reader.line_num, f"unreadable CSV: {exc}"))
            return


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
    w = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    w.writerow(COLUMNS)
    for a in await service.list_users():
        w.writerow([csv_cell(v) for v in (a.address, a.display_name, a.unit, a.title,
                                          ",".join(r.value for r in a.roles), "")])
    return out.getvalue()


def csv_cell(value: str) -> str:
    """A cell a spreadsheet shows as text (OWASP CSV injection: a leading = + - @ TAB CR
    gets a single quote) with control characters of legacy data shown escaped."""
    if value.startswith(FORMULA_PREFIXES):
        value = "'" + value
    return escape_controls(value)
