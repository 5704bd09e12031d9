"""smtp-burst and smtp-circular against local sinks: exact accounting, errors by class."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from load.cli import main
from tests.unit.load.conftest import DropAfterData, FakeImap, HangAfterData, Servers, SinkHandler


def run(argv: list[str], tmp_path: Path) -> tuple[int, dict[str, Any]]:
    out = tmp_path / "r.json"
    rc = main([*argv, "--quiet", "--json", str(out)])
    return rc, json.loads(out.read_text())


def assert_balanced(r: dict[str, Any]) -> None:
    assert r["sent"] == r["delivered"] + r["failed"] + r["lost"]
    assert r["balanced"] is True
    assert sum(r["errors"].values()) == r["failed"] + r["lost"]


def test_burst_classifies_refusals(sink: tuple[SinkHandler, int], tmp_path: Path) -> None:
    handler, port = sink
    report = tmp_path / "r.html"
    rc, r = run(["smtp-burst", "--target", f"127.0.0.1:{port}", "--count", "9",
                 "--connections", "3", "--rcpt", "ok@x.test", "--rcpt", "reject4@x.test",
                 "--rcpt", "reject5@x.test", "--report", str(report)], tmp_path)
    assert rc == 1  # some deliveries failed
    assert (r["sent"], r["delivered"], r["failed"], r["lost"]) == (9, 3, 6, 0)
    assert r["errors"] == {"smtp-4xx": 3, "smtp-5xx": 3}
    assert_balanced(r)
    for key in ("scenario", "target", "params", "started", "ended", "timeseries",
                "throughput_per_s"):
        assert key in r
    assert set(r["latency_ms"]) >= {"p50", "p90", "p99", "p999", "max"}
    assert r["latency_ms"]["count"] == 3
    # the sink got three messages, each with its own X-Load-Id and Message-ID
    assert len(handler.transactions) == 3
    ids = {re.search(rb"X-Load-Id: (\S+)", t[2]).group(1) for t in handler.transactions}  # type: ignore[union-attr]
    mids = {re.search(rb"Message-ID: (\S+)", t[2]).group(1) for t in handler.transactions}  # type: ignore[union-attr]
    assert len(ids) == 3 and len(mids) == 3
    html = report.read_text()
    assert html.count('<img src="data:image/png;base64,') == 3
    assert "Throughput over time" in html and "Latency distribution" in html
    for name in ("throughput", "latency", "latency-over-time"):
        assert (tmp_path / f"r-{name}.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize("pipelining", ["on", "off"])
def test_burst_reuse_and_sizes(pipelining_sink: tuple[SinkHandler, int], tmp_path: Path,
                               pipelining: str) -> None:
    handler, port = pipelining_sink
    rc, r = run(["smtp-burst", "--target", f"127.0.0.1:{port}", "--count", "40",
                 "--connections", "4", "--reuse", "--pipelining", pipelining,
                 "--size-dist", "1k:50,30k:50", "--seed", "7",
                 "--rcpt", "a@x.test", "--rcpt", "reject5@x.test"], tmp_path)
    assert rc == 1
    assert (r["sent"], r["delivered"], r["failed"]) == (40, 20, 20)
    assert r["connections_opened"] == 4
    assert_balanced(r)
    sizes = sorted(len(t[2]) for t in handler.transactions)
    assert sizes[0] < 2000 and sizes[-1] > 29000  # both size classes were used


def test_credentials_file_drives_recipients_and_hides_passwords(
        sink: tuple[SinkHandler, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    handler, port = sink
    creds = tmp_path / "demo-passwords.csv"
    creds.write_text("address,password\nann@x.test,Secr3t-Ann\nbob@x.test,Secr3t-Bob\n")
    rc = main(["smtp-burst", "--target", f"localhost:{port}", "--count", "4",
               "--credentials", str(creds), "--connections", "2"])
    assert rc == 0
    assert sorted(handler.mailboxes) == ["ann@x.test", "bob@x.test"]
    out = capsys.readouterr()
    assert "Secr3t" not in out.out + out.err


def test_circular_to_docs_addresses(sink: tuple[SinkHandler, int], tmp_path: Path) -> None:
    handler, port = sink
    units = tmp_path / "units.csv"
    units.write_text("code,name\nfinance,Finance\nroads,Roads\nparks,Parks\nschools,Schools\n"
                     "water,Water\n")
    rc, r = run(["smtp-circular", "--target", f"127.0.0.1:{port}", "--docs", str(units),
                 "--domain", "city.test", "--max-rcpts", "2"], tmp_path)
    assert rc == 0
    assert (r["sent"], r["delivered"], r["messages_sent"]) == (5, 5, 3)
    assert sorted(handler.mailboxes) == [f"{u}.docs@city.test" for u in
                                         ("finance", "parks", "roads", "schools", "water")]
    lids = {re.search(rb"X-Load-Id: (\S+)", t[2]).group(1) for t in handler.transactions}  # type: ignore[union-attr]
    assert len(lids) == 1  # one circular, split in three transactions
    assert r["reach_everyone_ms"] > 0


def test_connect_errors_are_failures(tmp_path: Path) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    rc, r = run(["smtp-burst", "--target", f"127.0.0.1:{port}", "--count", "5",
                 "--rcpt", "a@x.test", "--connections", "2"], tmp_path)
    assert rc == 1
    assert (r["sent"], r["failed"], r["errors"]) == (5, 5, {"connect": 5})
    assert_balanced(r)


def test_drop_after_data_is_lost(servers: Servers, tmp_path: Path) -> None:
    port = servers.start(DropAfterData)
    rc, r = run(["smtp-burst", "--target", f"127.0.0.1:{port}", "--count", "3",
                 "--rcpt", "a@x.test", "--connections", "1"], tmp_path)
    assert rc == 1
    assert (r["sent"], r["lost"], r["errors"]) == (3, 3, {"disconnect": 3})
    assert_balanced(r)


def test_open_loop_rate_and_duration_bound(sink: tuple[SinkHandler, int], tmp_path: Path) -> None:
    _, port = sink
    rc, r = run(["smtp-burst", "--target", f"127.0.0.1:{port}", "--rate", "100",
                 "--duration", "0.3", "--rcpt", "a@x.test", "--reuse"], tmp_path)
    assert rc == 0
    assert 20 <= r["sent"] <= 40  # ~30 at 100/s for 0.3 s
    assert r["lag_ms"]["count"] == r["sent"]
    assert_balanced(r)


def test_verify_imap_measures_end_to_end(servers: Servers, sink: tuple[SinkHandler, int],
                                         tmp_path: Path) -> None:
    handler, port = sink
    imap_port = servers.start(lambda: FakeImap(handler.mailboxes))
    creds = tmp_path / "c.csv"
    creds.write_text("address,password\nann@x.test,pw-ann-1\nbob@x.test,pw-bob-1\n")
    rc, r = run(["smtp-burst", "--target", f"127.0.0.1:{port}", "--count", "6",
                 "--credentials", str(creds), "--verify-imap", f"127.0.0.1:{imap_port}",
                 "--verify-poll", "0.01", "--verify-timeout", "5"], tmp_path)
    assert rc == 0, r
    assert (r["sent"], r["delivered"], r["lost"]) == (6, 6, 0)
    assert r["e2e_latency_ms"]["count"] == 6
    assert r["verification"]["seen"] == 6
    assert_balanced(r)


def test_verify_imap_counts_unseen_as_lost(servers: Servers, sink: tuple[SinkHandler, int],
                                           tmp_path: Path) -> None:
    handler, port = sink
    imap_port = servers.start(lambda: FakeImap({}))  # mailboxes stay empty
    creds = tmp_path / "c.csv"
    creds.write_text("ann@x.test,pw-ann-1\n")
    rc, r = run(["smtp-burst", "--target", f"127.0.0.1:{port}", "--count", "2",
                 "--credentials", str(creds), "--verify-imap", f"127.0.0.1:{imap_port}",
                 "--verify-timeout", "0.2"], tmp_path)
    assert rc == 1
    assert (r["sent"], r["delivered"], r["lost"], r["errors"]) == (2, 0, 2, {"not-seen": 2})
    assert_balanced(r)


def test_refuses_non_loopback_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["smtp-burst", "--target", "192.0.2.10:25", "--rcpt", "a@x.test", "--quiet"])
    assert rc == 2
    assert "refusing non-loopback target" in capsys.readouterr().err


def test_hard_max_duration_cuts_and_books_still_balance(servers: Servers, tmp_path: Path) -> None:
    port = servers.start(HangAfterData)
    rc, r = run(["smtp-burst", "--target", f"127.0.0.1:{port}", "--count", "5",
                 "--rcpt", "a@x.test", "--connections", "2", "--max-duration", "0.4"], tmp_path)
    assert rc == 1
    assert r["completed"] is False
    assert (r["sent"], r["lost"], r["errors"]) == (2, 2, {"aborted": 2})
    assert_balanced(r)


@pytest.mark.parametrize("extra", [[], ["--reuse", "--sasl"]])
def test_imap_sync(servers: Servers, tmp_path: Path, extra: list[str]) -> None:
    boxes = {"ann@x.test": [b"Subject: a\r\n\r\nhello\r\n", b"Subject: b\r\n\r\nworld\r\n"],
             "bob@x.test": []}
    port = servers.start(lambda: FakeImap(boxes))
    creds = tmp_path / "c.csv"
    creds.write_text("ann@x.test,pw-ann-1\nbob@x.test,pw-bob-1\n")
    rc, r = run(["imap-sync", "--target", f"127.0.0.1:{port}", "--count", "10",
                 "--connections", "2", "--credentials", str(creds), *extra], tmp_path)
    assert rc == 0, r
    assert (r["sent"], r["delivered"]) == (10, 10)
    assert r["login_ms"]["count"] == (2 if extra else 10)
    assert_balanced(r)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_submission_auth_plain(servers: Servers, tmp_path: Path) -> None:
    from aiosmtpd.smtp import SMTP, AuthResult

    logins: list[str] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                      data: Any) -> AuthResult:
        ok = data.password == b"pw-ann-1"
        if ok:
            logins.append(data.login.decode())
        return AuthResult(success=ok, handled=False)

    handler = SinkHandler()
    port = servers.start(lambda: SMTP(handler, authenticator=authenticator,
                                      auth_require_tls=False, auth_required=True))
    creds = tmp_path / "c.csv"
    creds.write_text("address,password\nann@x.test,pw-ann-1\n")
    rc, r = run(["smtp-burst", "--target", f"127.0.0.1:{port}", "--count", "3", "--auth",
                 "--credentials", str(creds), "--rcpt", "b@x.test"], tmp_path)
    assert rc == 0, r
    assert logins == ["ann@x.test"] * 3 and handler.transactions[0][0] == "ann@x.test"
    creds.write_text("ann@x.test,wrong-pass\n")
    rc, r = run(["smtp-burst", "--target", f"127.0.0.1:{port}", "--count", "2", "--auth",
                 "--credentials", str(creds), "--rcpt", "b@x.test"], tmp_path)
    assert rc == 1 and r["errors"] == {"smtp-5xx": 2}
    assert_balanced(r)
