"""Verbs: unit, user, alias (the directory's service API as subcommands)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from cxkernel.errors import Invalid
from gateway.cli import sieve_cmds
from gateway.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    add_json,
    emit,
    read_password,
    with_services,
)

UNIT_COLS = ["code", "name", "parent", "kind", "members"]
USER_COLS = ["address", "name", "unit", "title", "roles", "status"]


def register(sub: Any) -> None:
    unit = sub.add_parser("unit", help="units (departments, townships)").add_subparsers(dest="sub", metavar="VERB")
    p = unit.add_parser("add", help="add a unit")
    p.add_argument("code")
    p.add_argument("--name", required=True)
    p.add_argument("--parent", metavar="CODE")
    p.add_argument("--township", action="store_true", help="a remote township (not a city-level unit)")
    add_json(p)
    p.set_defaults(func=unit_add)
    p = unit.add_parser("list", help="list units")
    add_json(p)
    p.set_defaults(func=unit_list)
    p = unit.add_parser("show", help="show one unit")
    p.add_argument("code")
    add_json(p)
    p.set_defaults(func=unit_show)
    p = unit.add_parser("rename", help="change a unit's name")
    p.add_argument("code")
    p.add_argument("--name", required=True)
    add_json(p)
    p.set_defaults(func=unit_rename)
    p = unit.add_parser("remove", help="remove a unit (refused while it has members)")
    p.add_argument("code")
    p.set_defaults(func=unit_remove)

    user = sub.add_parser("user", help="accounts").add_subparsers(dest="sub", metavar="VERB")
    p = user.add_parser("add", help="add an account")
    p.add_argument("address")
    p.add_argument("--unit", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--title", default="")
    p.add_argument("--role", action="append", help="staff, clerk, unit-admin (repeatable)")
    p.add_argument("--quota", type=int, help="mailbox quota in bytes")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add_json(p)
    p.set_defaults(func=user_add)
    p = user.add_parser("list", help="list accounts")
    p.add_argument("--unit")
    add_json(p)
    p.set_defaults(func=user_list)
    p = user.add_parser("show", help="show one account")
    p.add_argument("address")
    add_json(p)
    p.set_defaults(func=user_show)
    p = user.add_parser("passwd", help="set a password")
    p.add_argument("address")
    p.add_argument("--password-stdin", action="store_true", required=True)
    p.set_defaults(func=user_passwd)
    for verb, fn, text in (("disable", user_disable, "disable an account"),
                           ("enable", user_enable, "enable an account (also lifts a lockout)"),
                           ("remove", user_remove, "remove an account")):
        p = user.add_parser(verb, help=text)
        p.add_argument("address")
        add_json(p)
        p.set_defaults(func=fn)
    p = user.add_parser("move", help="move an account to another unit")
    p.add_argument("address")
    p.add_argument("--unit", required=True)
    add_json(p)
    p.set_defaults(func=user_move)
    p = user.add_parser("set", help="change name, title, roles or quota")
    p.add_argument("address")
    p.add_argument("--name")
    p.add_argument("--title")
    p.add_argument("--role", action="append")
    p.add_argument("--quota", type=int)
    add_json(p)
    p.set_defaults(func=user_set)
    p = user.add_parser("import", help="import accounts from CSV, all or nothing")
    p.add_argument("file")
    p.add_argument("--encoding", default="utf-8", choices=["utf-8", "gbk", "gb18030", "auto"],
                   help="file encoding; auto detects it line by line (default utf-8)")
    p.add_argument("--dry-run", action="store_true", help="check only; write nothing")
    add_json(p)
    p.set_defaults(func=user_import)
    p = user.add_parser("export", help="export accounts to CSV (no passwords)")
    p.add_argument("file", help="output file, - for stdout")
    p.set_defaults(func=user_export)
    sieve_cmds.register_user(user)  # user vacation (issue 16)

    alias = sub.add_parser("alias", help="aliases").add_subparsers(dest="sub", metavar="VERB")
    p = alias.add_parser("add", help="add an alias")
    p.add_argument("address")
    p.add_argument("target")
    p.set_defaults(func=alias_add)
    p = alias.add_parser("remove", help="remove an alias (all targets unless one is given)")
    p.add_argument("address")
    p.add_argument("target", nargs="?")
    p.set_defaults(func=alias_remove)
    p = alias.add_parser("list", help="list aliases")
    p.add_argument("--target")
    add_json(p)
    p.set_defaults(func=alias_list)


@with_services
async def unit_add(s: Any, a: argparse.Namespace) -> int:
    unit = await s.directory.add_unit(a.code, a.name, a.parent, a.township)
    emit(a, unit.as_dict()) if a.json else print(f"unit {unit.code} added")
    return EXIT_OK


@with_services
async def unit_list(s: Any, a: argparse.Namespace) -> int:
    emit(a, [u.as_dict() for u in await s.directory.list_units()], UNIT_COLS)
    return EXIT_OK


@with_services
async def unit_show(s: Any, a: argparse.Namespace) -> int:
    unit = await s.directory.get_unit(a.code)
    d = unit.as_dict()
    d["list_address"] = f"{unit.code}@{s.directory.domain}"
    d["docs_address"] = f"{unit.code}.docs@{s.directory.domain}"
    emit(a, d)
    return EXIT_OK


@with_services
async def unit_rename(s: Any, a: argparse.Namespace) -> int:
    unit = await s.directory.rename_unit(a.code, a.name)
    emit(a, unit.as_dict()) if a.json else print(f"unit {unit.code} renamed to {unit.name}")
    return EXIT_OK


@with_services
async def unit_remove(s: Any, a: argparse.Namespace) -> int:
    await s.directory.remove_unit(a.code)
    print(f"unit {a.code} removed")
    return EXIT_OK


def _user_out(a: argparse.Namespace, acct: Any, text: str) -> None:
    emit(a, acct.as_dict()) if a.json else print(text)


@with_services
async def user_add(s: Any, a: argparse.Namespace) -> int:
    acct = await s.directory.add_user(a.address, a.unit, a.name, a.title, a.role,
                                      read_password(a), a.quota)
    _user_out(a, acct, f"account {acct.address} added")
    return EXIT_OK


@with_services
async def user_list(s: Any, a: argparse.Namespace) -> int:
    emit(a, [u.as_dict() for u in await s.directory.list_users(a.unit)], USER_COLS)
    return EXIT_OK


@with_services
async def user_show(s: Any, a: argparse.Namespace) -> int:
    acct = await s.directory.get_user(a.address)
    emit(a, {**acct.as_dict(), "aliases": list(acct.aliases)})
    return EXIT_OK


@with_services
async def user_passwd(s: Any, a: argparse.Namespace) -> int:
    pw = read_password(a)
    assert pw is not None
    await s.directory.set_password(a.address, pw)
    print(f"password of {s.directory.address(a.address)} changed")
    return EXIT_OK


@with_services
async def user_disable(s: Any, a: argparse.Namespace) -> int:
    _user_out(a, await s.directory.disable_user(a.address), f"account {a.address} disabled")
    return EXIT_OK


@with_services
async def user_enable(s: Any, a: argparse.Namespace) -> int:
    _user_out(a, await s.directory.enable_user(a.address), f"account {a.address} enabled")
    return EXIT_OK


@with_services
async def user_remove(s: Any, a: argparse.Namespace) -> int:
    await s.directory.remove_user(a.address)
    print(f"account {a.address} removed")
    return EXIT_OK


@with_services
async def user_move(s: Any, a: argparse.Namespace) -> int:
    acct = await s.directory.move_user(a.address, a.unit)
    _user_out(a, acct, f"account {acct.address} moved to {acct.unit}")
    return EXIT_OK


@with_services
async def user_set(s: Any, a: argparse.Namespace) -> int:
    acct = await s.directory.update_user(a.address, name=a.name, title=a.title, roles=a.role,
                                         quota=a.quota)
    _user_out(a, acct, f"account {acct.address} updated")
    return EXIT_OK


@with_services
async def user_import(s: Any, a: argparse.Namespace) -> int:
    from directory.importer import import_users
    from gateway.cli.progress import Progress
    try:
        data = Path(a.file).read_bytes()
    except OSError as exc:
        raise Invalid(f"cannot read {a.file}: {exc.strerror}") from None
    t0 = time.monotonic()
    with Progress("import") as bar:
        report = await import_users(s.directory, data, a.encoding, a.dry_run, progress=bar.update)
    took = time.monotonic() - t0
    if a.json:
        emit(a, {"ok": report.ok, "applied": report.applied, "rows": len(report.rows),
                 "errors": [{"line": ln, "reason": r} for ln, r in report.errors],
                 "seconds": round(took, 3)})
    else:
        for line, reason in report.errors:
            print(f"{a.file}:{line}: {reason}", file=sys.stderr)
        if not report.ok:
            print(f"import refused: {len(report.errors)} bad row(s); nothing was written",
                  file=sys.stderr)
        elif report.applied:
            print(f"{len(report.rows)} accounts imported in {took:.1f}s")
        else:
            print(f"dry run: {len(report.rows)} rows are valid; nothing was written")
    return EXIT_OK if report.ok else EXIT_INVALID


@with_services
async def user_export(s: Any, a: argparse.Namespace) -> int:
    from directory.importer import export_users
    text = await export_users(s.directory)
    if a.file == "-":
        sys.stdout.write(text)
    else:
        Path(a.file).write_text(text, encoding="utf-8")
        print(f"{text.count(chr(10)) - 1} accounts exported to {a.file}")
    return EXIT_OK


@with_services
async def alias_add(s: Any, a: argparse.Namespace) -> int:
    await s.directory.add_alias(a.address, a.target)
    print(f"alias {s.directory.address(a.address)} -> {a.target} added")
    return EXIT_OK


@with_services
async def alias_remove(s: Any, a: argparse.Namespace) -> int:
    n = await s.directory.remove_alias(a.address, a.target)
    print(f"{n} alias entr{'y' if n == 1 else 'ies'} removed")
    return EXIT_OK


@with_services
async def alias_list(s: Any, a: argparse.Namespace) -> int:
    rows = [{"address": ad, "target": t} for ad, t in await s.directory.list_aliases(a.target)]
    emit(a, rows, ["address", "target"])
    return EXIT_OK
