"""The `cxgw` admin CLI end to end (in-process, real PostgreSQL), including CSV import."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gateway.cli.main import main


@pytest.fixture
def cli(db_url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CXGW_DATABASE_URL", db_url)
    cfg = tmp_path / "cx.toml"
    cfg.write_text(f'[server]\nstate_dir = "{tmp_path / "state"}"\n'
                   '[auth]\nscram_iterations = 4096\n')
    monkeypatch.setenv("CXGW_CONFIG", str(cfg))

    def run(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        if stdin is not None:
            import io
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_units_users_aliases(cli):
    assert cli("unit", "add", "finance", "--name", "市财政局")[0] == 0
    assert cli("unit", "add", "town-lucheng", "--name", "鹿城镇", "--township")[0] == 0
    code, _, err = cli("unit", "add", "finance", "--name", "again")
    assert code == 4 and "already exists" in err
    code, out, _ = cli("unit", "list", "--json")
    units = json.loads(out)
    assert [u["code"] for u in units] == ["finance", "town-lucheng"]
    assert units[1]["kind"] == "township" and units[0]["name"] == "市财政局"
    code, out, _ = cli("user", "add", "zhang.san", "--unit", "finance", "--name", "张三",
                       "--role", "clerk", "--password-stdin", stdin="Str0ng-pass!\n")
    assert code == 0, out
    code, _, err = cli("user", "add", "bad address", "--unit", "finance", "--name", "x")
    assert code == 5 and "malformed" in err
    code, _, err = cli("user", "add", "li.si", "--unit", "nope", "--name", "李四")
    assert code == 3 and "unknown unit" in err
    code, out, _ = cli("user", "list", "--unit", "finance", "--json")
    users = json.loads(out)
    assert users[0]["address"] == "zhang.san@cx.example" and users[0]["roles"] == ["clerk"]
    assert cli("user", "disable", "zhang.san")[0] == 0
    code, out, _ = cli("user", "show", "zhang.san", "--json")
    assert json.loads(out)["status"] == "disabled"
    assert cli("user", "enable", "zhang.san")[0] == 0
    assert cli("user", "passwd", "zhang.san", "--password-stdin", stdin="An0ther-pass\n")[0] == 0
    assert cli("user", "passwd", "zhang.san", "--password-stdin", stdin="weak\n")[0] == 5
    assert cli("alias", "add", "director", "zhang.san")[0] == 0
    code, out, _ = cli("alias", "list", "--json")
    assert json.loads(out) == [{"address": "director@cx.example", "target": "zhang.san@cx.example"}]
    code, _, err = cli("unit", "remove", "finance")
    assert code == 4 and "members" in err
    assert cli("user", "move", "zhang.san", "--unit", "town-lucheng")[0] == 0
    assert cli("unit", "remove", "finance")[0] == 0
    assert cli("alias", "remove", "director")[0] == 0
    assert cli("user", "remove", "zhang.san")[0] == 0
    assert cli("user", "remove", "zhang.san")[0] == 3


HEADER = "address,name,unit,title,role,password\n"


def test_import_good_file_utf8_and_gbk(cli, tmp_path):
    cli("unit", "add", "finance", "--name", "市财政局")
    cli("unit", "add", "stats", "--name", "市统计局")
    good = tmp_path / "good.csv"
    good.write_text(HEADER + "zhang.san,张三,finance,科长,clerk,Str0ng-pass1\n"
                    "li.si@cx.example,李四,stats,,staff,Str0ng-pass2\n", encoding="utf-8")
    code, out, err = cli("user", "import", str(good))
    assert code == 0, err
    assert "2 accounts imported" in out
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes((HEADER + "wang.wu,王五,stats,副局长,unit-admin,Str0ng-pass3\n").encode("gbk"))
    code, out, err = cli("user", "import", str(gbk), "--encoding", "gbk")
    assert code == 0, err
    code, out, _ = cli("user", "show", "wang.wu", "--json")
    assert json.loads(out)["name"] == "王五"
    exported = tmp_path / "out.csv"
    assert cli("user", "export", str(exported))[0] == 0
    text = exported.read_text(encoding="utf-8")
    assert "王五" in text and "Str0ng" not in text


def test_import_bad_file_is_all_or_nothing(cli, tmp_path):
    cli("unit", "add", "finance", "--name", "市财政局")
    cli("user", "add", "exists", "--unit", "finance", "--name", "已有")
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER
                   + "ok.one,好人,finance,,staff,Str0ng-pass1\n"        # line 2: fine
                   + "x,某人,nounit,,staff,Str0ng-pass1\n"              # 3: unknown unit
                   + "ok.one,重复,finance,,staff,Str0ng-pass1\n"        # 4: duplicate in file
                   + "bad..addr,某人,finance,,staff,Str0ng-pass1\n"     # 5: malformed
                   + "weak.pw,某人,finance,,staff,123\n"                # 6: weak password
                   + "exists,某人,finance,,staff,Str0ng-pass1\n"        # 7: already exists
                   + "role.bad,某人,finance,,boss,Str0ng-pass1\n",      # 8: unknown role
                   encoding="utf-8")
    code, out, err = cli("user", "import", str(bad), "--json")
    assert code == 5
    report = json.loads(out)
    lines = {e["line"]: e["reason"] for e in report["errors"]}
    assert set(lines) == {3, 4, 5, 6, 7, 8}
    assert "unknown unit" in lines[3] and "duplicate" in lines[4] and "malformed" in lines[5]
    assert "weak password" in lines[6] and "already exists" in lines[7] and "role" in lines[8]
    code, out, _ = cli("user", "list", "--json")
    assert [u["address"] for u in json.loads(out)] == ["exists@cx.example"]  # nothing applied


def test_import_bad_encoding_and_dry_run(cli, tmp_path):
    cli("unit", "add", "finance", "--name", "市财政局")
    f = tmp_path / "gbk.csv"
    f.write_bytes((HEADER + "zhang.san,张三,finance,,staff,Str0ng-pass1\n").encode("gbk"))
    code, _, err = cli("user", "import", str(f))  # read as utf-8: wrong
    assert code == 5 and ":2: bad encoding" in err
    code, out, _ = cli("user", "import", str(f), "--encoding", "gb18030", "--dry-run")
    assert code == 0 and "dry run" in out
    assert json.loads(cli("user", "list", "--json")[1]) == []


def test_demo_seed_small(cli, tmp_path):
    pw = tmp_path / "pw.csv"
    code, out, err = cli("demo", "seed", "--count", "200", "--passwords", str(pw))
    assert code == 0, err
    units = json.loads(cli("unit", "list", "--json")[1])
    assert len(units) == 93 and sum(u["kind"] == "township" for u in units) == 15
    lines = pw.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "address,password,unit" and len(lines) == 201
    users = json.loads(cli("user", "list", "--json")[1])
    assert len(users) == 200 and any("\u4e00" <= users[0]["name"][0] <= "\u9fff" for _ in [0])


def test_db_status_and_config(cli, tmp_path):
    code, out, _ = cli("db", "status", "--json")
    rows = json.loads(out)
    assert rows and all(r["applied"] for r in rows)
    assert cli("db", "migrate")[1].strip() == "database is up to date"
    code, out, _ = cli("config", "example")
    assert "[listen]" in out and 'smtp = "127.0.0.1:2525"' in out


def test_unreachable_database_is_a_clear_error(tmp_path):
    env = {**os.environ, "CXGW_DATABASE_URL": "postgresql://u:secret@127.0.0.1:1/none",
           "CXGW_CONFIG": ""}
    p = subprocess.run([sys.executable, "-m", "gateway", "unit", "list"], env=env,
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert p.returncode == 6
    assert "database is not reachable" in p.stderr and "secret" not in p.stderr
