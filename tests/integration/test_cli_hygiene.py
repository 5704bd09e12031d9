"""CLI input hygiene (issue 12 item 7) through the `cxgw` CLI on a real PostgreSQL: formula
prefixes, one validation path for dry run and import, encodings line by line, control
characters refused in names and titles and shown escaped for legacy data."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys

import asyncpg
import pytest

from tests.integration.test_cli import HEADER, cli  # noqa: F401  (the fixture)


@pytest.fixture
def run(cli):  # noqa: F811
    """The CLI, with the unit `finance`."""
    assert cli("unit", "add", "finance", "--name", "市财政局")[0] == 0
    return cli


def legacy_update(db_url: str, sql: str, *args: object) -> None:
    """Data written before these rules existed (straight into the table)."""
    async def run() -> None:
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute(sql, *args)
        finally:
            await conn.close()
    asyncio.run(run())


def test_export_neutralises_formulas_and_escapes_controls(run, db_url, tmp_path):
    assert run("user", "add", "zhang.san", "--unit", "finance", "--name", "张三")[0] == 0
    assert run("user", "add", "li.si", "--unit", "finance", "--name", "李四")[0] == 0
    legacy_update(db_url, "update accounts set display_name=$1, title=$2 where address=$3",
                  '=HYPERLINK("http://evil.example","x")', "@SUM(1+1)", "zhang.san@cx.example")
    legacy_update(db_url, "update accounts set title=$1 where address=$2",
                  "-2+3\t\x1b[31mred", "li.si@cx.example")
    code, out, err = run("user", "export", "-")
    assert code == 0, err
    rows = {r["address"]: r for r in csv.DictReader(io.StringIO(out))}
    z, li = rows["zhang.san@cx.example"], rows["li.si@cx.example"]
    assert z["name"] == '\'=HYPERLINK("http://evil.example","x")'
    assert z["title"] == "'@SUM(1+1)"
    assert li["title"] == "'-2+3\\x09\\x1b[31mred" and "\x1b" not in out
    assert all(not v.startswith(("=", "+", "-", "@", "\t", "\r"))
               for r in rows.values() for v in r.values())
    # the neutralised file imports back (as text) on a fresh directory
    legacy_update(db_url, "delete from accounts")
    f = tmp_path / "back.csv"
    f.write_text(out, encoding="utf-8")
    code, _out, err = run("user", "import", str(f))
    assert code == 0, err


def test_show_prints_legacy_control_characters_escaped(run, db_url):
    assert run("user", "add", "zhang.san", "--unit", "finance", "--name", "张三")[0] == 0
    legacy_update(db_url, "update accounts set title=$1, display_name=$2 where address=$3",
                  "科长\x1b[2J\r\nstatus  disabled\x07", "张\u202e三\x9b", "zhang.san@cx.example")
    code, out, _ = run("user", "show", "zhang.san")
    assert code == 0
    assert not any(c in out for c in "\x1b\r\x07\u202e\x9b")
    assert "科长\\x1b[2J\\x0d\\x0astatus  disabled\\x07" in out and "张\\u202e三\\x9b" in out
    code, out, _ = run("user", "list")
    assert code == 0 and not any(c in out for c in "\x1b\r\x07\u202e\x9b")
    code, out, _ = run("user", "show", "zhang.san", "--json")
    assert not any(c in out for c in "\x1b\r\x07\u202e\x9b")
    data = json.loads(out)
    assert data["title"] == "科长\x1b[2J\r\nstatus  disabled\x07"  # JSON keeps the value
    assert data["name"] == "张\u202e三\x9b"


@pytest.mark.parametrize("field,value", [
    ("--name", "=cmd|'/c calc'!A1"), ("--name", "+1"), ("--title", "@SUM(A1)"),
    ("--title", "-1"), ("--title", "科长\x1b[31m"), ("--title", "a\r\nb"),
    ("--name", "张\u202e三"), ("--name", "李\x85四"), ("--title", "x\x00"),
])
def test_service_refuses_controls_and_formulas(run, field, value):
    code, _, err = run("user", "add", "zhang.san", "--unit", "finance",
                       *(["--name", "张三"] if field == "--title" else []), field, value)
    assert code == 5, err
    assert "control character" in err or "formula" in err
    assert run("user", "add", "zhang.san", "--unit", "finance", "--name", "张三")[0] == 0
    code, _, err = run("user", "set", "zhang.san", field, value)
    assert code == 5 and ("control character" in err or "formula" in err)
    code, _, err = run("unit", "add", "stats", "--name", value)
    assert code == 5


BAD_ROWS = (HEADER
            + "ok.one,好人,finance,科长,staff,Str0ng-pass1\n"         # 2 fine
            + "nul.title,某人,finance,科\x00长,staff,Str0ng-pass1\n"   # 3 NUL in title
            + "nul.pw,某人,finance,,staff,Str0ng\x00pass1\n"          # 4 NUL in password
            + "formula,=1+2,finance,,staff,Str0ng-pass1\n"            # 5 formula name
            + "esc,某人,finance,\x1b[31m,staff,Str0ng-pass1\n"        # 6 ANSI title
            + "at.title,某人,finance,@cmd,staff,Str0ng-pass1\n"       # 7 formula title
            + '"crlf",某人,finance,"a\rb",staff,Str0ng-pass1\n')      # 8 CR in a field


def test_dry_run_reports_what_the_import_would_refuse(run, tmp_path):
    f = tmp_path / "bad.csv"
    f.write_bytes(BAD_ROWS.encode("utf-8"))
    reports = []
    for extra in (["--dry-run"], []):
        code, out, err = run("user", "import", str(f), "--json", *extra)
        assert code == 5, err
        reports.append({e["line"]: e["reason"] for e in json.loads(out)["errors"]})
    assert reports[0] == reports[1]  # one validation path
    lines = reports[0]
    assert set(lines) == {3, 4, 5, 6, 7, 8}, lines
    assert "control character" in lines[3] and "password" in lines[4]
    assert "formula" in lines[5] and "control character" in lines[6] and "formula" in lines[7]
    assert json.loads(run("user", "list", "--json")[1]) == []


def test_real_import_of_nul_never_tracebacks(db_url, tmp_path):
    """As an admin runs it: a separate process; a clear error, exit 5, no traceback."""
    f = tmp_path / "nul.csv"
    f.write_bytes((HEADER + "nul.pw,某人,finance,科\x00长,staff,Str0ng\x00pass1\n").encode())
    cfg = tmp_path / "cx.toml"
    cfg.write_text(f'[server]\nstate_dir = "{tmp_path / "state"}"\n')
    env = {**os.environ, "CXGW_DATABASE_URL": db_url, "CXGW_CONFIG": str(cfg)}
    run = [sys.executable, "-m", "gateway"]
    assert subprocess.run([*run, "unit", "add", "finance", "--name", "财政"], env=env,
                          capture_output=True, timeout=120).returncode == 0
    p = subprocess.run([*run, "user", "import", str(f)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 5, p.stderr
    assert "Traceback" not in p.stderr and ":2: title contains a control character" in p.stderr


def test_gbk_file_with_a_utf8_line_is_reported_not_garbled(run, tmp_path):
    f = tmp_path / "mixed.csv"
    f.write_bytes(HEADER.encode() + "zhang.san,张三,finance,科长,staff,Str0ng-pass1\n".encode("gbk")
                  + "li.si,李四,finance,副科长,staff,Str0ng-pass2\n".encode()  # line 3
                  + "wang.wu,王五,finance,,staff,Str0ng-pass3\n".encode("gbk"))
    for enc in ("gbk", "gb18030", "auto"):
        code, out, err = run("user", "import", str(f), "--encoding", enc, "--json")
        assert code == 5, (enc, err)
        errors = json.loads(out)["errors"]
        assert [e["line"] for e in errors] == [3] and "UTF-8 line" in errors[0]["reason"]
    code, _, err = run("user", "import", str(f))  # declared UTF-8: both GBK lines reported
    assert code == 5 and ":2: bad encoding" in err and ":4: bad encoding" in err
    assert json.loads(run("user", "list", "--json")[1]) == []


def test_auto_detects_each_file(run, tmp_path):
    g = tmp_path / "gbk.csv"
    g.write_bytes((HEADER + "wang.wu,王五,finance,副局长,staff,Str0ng-pass3\n").encode("gbk"))
    u = tmp_path / "utf8.csv"
    u.write_bytes(b"\xef\xbb\xbf" + (HEADER + "li.si,李四,finance,,staff,Str0ng-pass2\n").encode())
    for f in (g, u):
        code, _, err = run("user", "import", str(f), "--encoding", "auto")
        assert code == 0, err
    names = {x["address"]: x["name"] for x in json.loads(run("user", "list", "--json")[1])}
    assert names == {"wang.wu@cx.example": "王五", "li.si@cx.example": "李四"}
