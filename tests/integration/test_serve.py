"""`cxgw serve` in a subprocess: embedded PostgreSQL, endpoints printed, ready, clean stop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.faultutil import LISTENERS


def start_server(config: Path, env: dict[str, str] | None = None,
                 timeout: float = 60) -> tuple[subprocess.Popen[str], dict[str, int], list[str]]:
    """Start `cxgw serve`; wait for `cxgw ready`; return (process, {endpoint: port}, lines)."""
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(config), "serve"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, **(env or {})})
    ports: dict[str, int] = {}
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        m = re.match(r"listening (\S+)\s+\w+://[\d.]+:(\d+)", line)
        if m:
            ports[m.group(1)] = int(m.group(2))
        if line.startswith("cxgw ready"):
            return proc, ports, lines
    proc.kill()
    raise AssertionError(f"server did not become ready: {lines}")


def test_serve_embedded_start_and_stop():
    state = Path(tempfile.mkdtemp(prefix="cxsv"))
    cfg = state / "cx.toml"
    listen = "\n".join(f'{k} = "127.0.0.1:0"' for k in LISTENERS)  # every one, port 0
    cfg.write_text(f'[server]\nstate_dir = "{state / "var"}"\n[listen]\n{listen}\n')
    env = {"CXGW_DATABASE_URL": "", "CXGW_CONFIG": ""}
    proc, ports, lines = start_server(cfg, env)
    try:
        assert "http" in ports
        assert any(line.startswith("database embedded") for line in lines)
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/health", timeout=10) as r:
            assert r.read() == b"ok\n"
        # the CLI attaches to the running embedded database
        cli = subprocess.run([sys.executable, "-m", "gateway", "--config", str(cfg), "unit", "add",
                              "finance", "--name", "市财政局"], capture_output=True, text=True,
                             env={**os.environ, **env}, timeout=60)
        assert cli.returncode == 0, cli.stderr
        assert (state / "var" / "tls" / "server.crt").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "cxgw stopped" in out
    pid_file = state / "var" / "pg" / "postmaster.pid"
    assert not pid_file.exists(), "embedded PostgreSQL was left running"


def test_bad_config_stops_startup(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[listen]\nsmtp = "nonsense"\n')
    p = subprocess.run([sys.executable, "-m", "gateway", "--config", str(cfg), "serve"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 7
    assert "listen.smtp" in p.stderr


@pytest.mark.parametrize("argv", [["config", "example"], ["--help"]])
def test_cli_without_database(argv):
    p = subprocess.run([sys.executable, "-m", "gateway", *argv], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and p.stdout
