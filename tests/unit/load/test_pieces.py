"""Pure pieces of the harness: options, stats, compare, smtp-source import, report."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from load.cli import main
from load.compare import compare
from load.message import MessageFactory
from load.options import (
    OptionError,
    SizeDist,
    Target,
    check_target_allowed,
    is_loopback,
    load_credentials,
    load_units,
    parse_size,
    parse_target,
)
from load.report import render_html
from load.smtp_source import parse_command, parse_counter, parse_elapsed, to_result
from load.stats import Recorder


def test_parse_target_and_loopback_rule() -> None:
    assert parse_target("127.0.0.1", 25) == Target("127.0.0.1", 25)
    assert parse_target("localhost:2525", 25) == Target("localhost", 2525)
    assert parse_target("[::1]:587", 25) == Target("::1", 587)
    assert str(Target("::1", 587)) == "[::1]:587"
    with pytest.raises(OptionError):
        parse_target("host:99999", 25)
    assert is_loopback("127.0.0.5") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("192.0.2.1")
    with pytest.raises(OptionError, match="allow-remote"):
        check_target_allowed(Target("192.0.2.1", 25), allow_remote=False)
    check_target_allowed(Target("192.0.2.1", 25), allow_remote=True)


def test_sizes() -> None:
    assert parse_size("2k") == 2048 and parse_size("512") == 512 and parse_size("1m") == 1 << 20
    d = SizeDist.parse("2k:70,20k:25,500k:5")
    rng = random.Random(1)
    picks = [d.pick(rng) for _ in range(4000)]
    assert set(picks) == {2048, 20480, 512000}
    assert 0.65 < picks.count(2048) / 4000 < 0.75
    with pytest.raises(OptionError):
        SizeDist.parse("2k:0")


def test_message_factory_sizes_and_ids() -> None:
    f = MessageFactory("cxltest")
    lid, data = f.build(7, "a@x", ["b@y"], 5000)
    assert lid == "cxltest-00000007"
    assert data.endswith(b"\r\n.\r\n") and abs(len(data) - 5000) < 10
    assert b"\r\n." not in data[:-5]  # no line starts with a dot: no stuffing needed
    assert f"Message-ID: <{lid}@".encode() in data


def test_credentials_and_units(tmp_path: Path) -> None:
    c = tmp_path / "c.csv"
    c.write_text("# demo\naddress,password\nAnn@X.test,pw1\n\nbob@x.test,pw,extra\n")
    creds = load_credentials(c)
    assert [x.address for x in creds] == ["ann@x.test", "bob@x.test"]
    assert "pw1" not in repr(creds)
    u = tmp_path / "u.txt"
    u.write_text("finance\nroads\n")
    assert load_units(u, "city.test") == ["finance.docs@city.test", "roads.docs@city.test"]
    with pytest.raises(OptionError, match="--domain"):
        load_units(u, None)


def test_recorder_books_balance() -> None:
    r = Recorder()
    r.started(3)
    r.accept(2, 0.010, pending=1)
    r.fail("smtp-5xx", 1)
    assert not r.balanced()  # one delivery still waits for the mailbox
    r.seen(0.5)
    assert r.balanced() and r.delivered == 2 and r.accepted == 2


def result(tp: float, p50: float, p99: float) -> dict[str, object]:
    return {"scenario": "smtp-burst", "throughput_per_s": tp,
            "latency_ms": {"p50": p50, "p90": p50, "p99": p99, "p999": p99, "max": p99}}


def test_compare_ratios(tmp_path: Path) -> None:
    c = compare(result(1000, 2.0, 10.0), result(1500, 1.0, 20.0))
    assert c["throughput_per_s"]["ratio"] == 1.5
    assert c["latency_ms.p50"]["ratio"] == 0.5
    assert c["latency_ms.p99"]["ratio"] == 2.0
    a, b, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps(result(1000, 2.0, 10.0)))
    b.write_text(json.dumps(result(500, 4.0, 10.0)))
    assert main(["compare", str(a), str(b), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["ratios"]["throughput_per_s"]["ratio"] == 0.5


def test_smtp_source_import(tmp_path: Path) -> None:
    assert parse_elapsed("3.5") == 3.5
    assert parse_elapsed("\nreal\t1m2.500s\nuser\t0m0.1s\n") == 62.5
    assert parse_elapsed("real 4.25\nuser 0.1") == 4.25
    assert parse_elapsed("0.1user 0.2system 0:03.41elapsed 9%CPU") == 3.41
    assert parse_counter("1\r2\r3\r998\r1000\r") == 1000
    p = parse_command("smtp-source -c -d -s 20 -m 1000 -l2048 -f a@x 127.0.0.1:2525")
    assert p == {"counter": True, "reuse": True, "sessions": 20, "count": 1000,
                 "length": 2048, "from": "a@x", "target": "127.0.0.1:2525"}
    r = to_result(elapsed=2.0, cmd="smtp-source -m 1000 127.0.0.1:25", counter_text="998\r",
                  warnings_text="smtp-source: warning: x: 450 4.2.1 busy\n"
                                "smtp-source: warning: y: 550 no\n")
    assert (r["sent"], r["delivered"], r["failed"], r["throughput_per_s"]) == (1000, 998, 2, 499.0)
    assert r["errors"] == {"smtp-4xx": 1, "smtp-5xx": 1}
    out = tmp_path / "s.json"
    assert main(["import-smtp-source", "--cmd", "smtp-source -s 5 -m 100 127.0.0.1:2525",
                 "--elapsed", "real 0m0.500s", "--json", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["throughput_per_s"] == 200.0


def test_report_renders_without_data() -> None:
    r = to_result(elapsed=1.0, count=10)  # an imported smtp-source run: no series, no curves
    html = render_html(r)
    assert html.count('<img src="data:image/png;base64,') == 3


def test_list_and_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "smtp-burst" in out and "xmpp-chat" in out
    with pytest.raises(SystemExit):
        main(["smtp-burst"])  # --target is required: no default remote target


def test_message_bodies_have_no_bare_cr_or_lf_at_any_size() -> None:
    import re

    f = MessageFactory("cxltest")
    for size in range(0, 400):
        _, data = f.build(1, "a@x", ["b@y"], size)
        assert not re.search(rb"\r(?!\n)|(?<!\r)\n", data), size
