"""Start `cxgw serve` for a benchmark: a fresh state dir, chosen listeners on port 0,
embedded PostgreSQL; and run `cxgw` verbs against it. Shared by the benchmark scripts."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cxkernel.config import ListenConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


LOG_LEVEL = os.environ.get("BENCH_LOG", "warning")  # BENCH_LOG=info to see the server's log
# every listener the config knows: those not asked for are switched off
LISTENERS = tuple(f.name for f in dataclasses.fields(ListenConfig) if f.name != "xmpp_component")


def start(state: Path, on: tuple[str, ...], extra_toml: str = "",
          server_toml: str = "", smarthost: str = "127.0.0.1:9"
          ) -> tuple[subprocess.Popen[str], dict[str, int]]:
    """Start the server with listeners `on` (127.0.0.1:0) and the others off; wait for
    `cxgw ready`; return the process and {listener: port}. Remote mail goes to `smarthost`
    (by default a closed port: it stays queued)."""
    listen = "\n".join(f'{k} = "127.0.0.1:0"' if k in on else f'{k} = ""' for k in LISTENERS)
    (state / "cx.toml").write_text(
        f'[server]\nstate_dir = "{state / "var"}"\nlog_level = "{LOG_LEVEL}"\n{server_toml}'
        f'[listen]\n{listen}\n[relay]\nsmarthost = "{smarthost}"\n{extra_toml}')
    proc = subprocess.Popen(
        [PY, "-m", "gateway", "--config", str(state / "cx.toml"), "serve"], cwd=ROOT,
        stdout=subprocess.PIPE, text=True,
        stderr=None if os.environ.get("BENCH_DEBUG") else subprocess.DEVNULL,
        env={**os.environ, "CXGW_DATABASE_URL": "", "CXGW_CONFIG": ""})
    ports: dict[str, int] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.match(r"listening (\S+)\s+\w+://[\d.]+:(\d+)", line)
        if m:
            ports[m.group(1)] = int(m.group(2))
        if line.startswith("cxgw ready"):
            return proc, ports
    raise SystemExit("server did not start")


def cli(state: Path, *argv: str, stdin: str | None = None) -> str:
    """Run a `cxgw` verb against the benchmark's server; exit on failure."""
    p = subprocess.run([PY, "-m", "gateway", "--config", str(state / "cx.toml"), *argv],
                       cwd=ROOT, capture_output=True, text=True, input=stdin,
                       env={**os.environ, "CXGW_DATABASE_URL": ""})
    if p.returncode:
        raise SystemExit(p.stderr)
    return p.stdout
