"""Helpers for fault tests and benchmarks/fault_bench.py: `cxgw serve` processes on one
database, a counting SMTP sink that may answer slowly, and a sender that tells what was
acknowledged.

The sink counts a message only when its 250 could still reach the sender (the connection
is open after the delay): a message whose sender died before the reply is not "delivered"
in the sender's eyes, and sending it again is what SMTP requires (RFC 5321 §6.1).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.smtp import SMTP as SinkSMTP

from cxkernel.config import ListenConfig

# every listener the config knows (a new one must not fall back to a fixed default port)
LISTENERS = tuple(f.name for f in dataclasses.fields(ListenConfig) if f.name != "xmpp_component")



def write_config(path: Path, db_url: str, *, smarthost_port: int, lease: int = 5,
                 per_destination: int = 2, heartbeat: float = 0.5, dead: float = 3.0,
                 extra: str = "") -> Path:
    listen = "\n".join(f'{k} = "127.0.0.1:0"' for k in LISTENERS)
    path.write_text(
        f'[server]\nstate_dir = "{path.parent / (path.stem + "-var")}"\n'
        f'[database]\nurl = "{db_url}"\npool_min = 1\npool_max = 10\n'
        f'[listen]\n{listen}\n'
        f'[smtp]\ntrusted_networks = ["127.0.0.0/8"]\n'
        f'[relay]\nsmarthost = "127.0.0.1:{smarthost_port}"\n'
        f'[queue]\nretry_initial = 1\nretry_max = 2\nlease_seconds = {lease}\n'
        f'per_destination = {per_destination}\n'
        f'[node]\nheartbeat_seconds = {heartbeat}\ndead_seconds = {dead}\n' + extra)
    return path


class Serve:
    """One `cxgw serve` process."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.proc: subprocess.Popen[str] | None = None
        self.ports: dict[str, int] = {}

    def start(self, timeout: float = 60) -> Serve:
        env = {**os.environ, "CXGW_CONFIG": "", "CXGW_DATABASE_URL": ""}
        self.log = self.config.with_suffix(".log")
        with open(self.log, "ab") as err:  # the server's log, for a failing test to show
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "--config", str(self.config), "serve"],
                stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        assert self.proc.stdout is not None
        lines = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            m = re.match(r"listening (\S+)\s+\w+://[\d.]+:(\d+)", line)
            if m:
                self.ports[m.group(1)] = int(m.group(2))
            if line.startswith("cxgw ready"):
                return self
        self.proc.kill()
        raise AssertionError(f"server did not become ready: {lines}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 60) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Sink:
    """An SMTP server counting each message by its Subject; `delay` before the 250."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.counts: Counter[str] = Counter()
        self.server: asyncio.base_events.Server | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        transport = getattr(server, "transport", None)
        if transport is None or transport.is_closing():
            return "451 4.3.0 sender went away"  # never seen by anyone: not counted
        m = re.search(rb"^Subject: (\S+)", envelope.original_content, re.M)
        self.counts[m.group(1).decode() if m else "?"] += 1
        return "250 2.0.0 ok"

    async def start(self, port: int) -> Sink:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: SinkSMTP(self), "127.0.0.1", port)
        return self

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def send(port: int, subject: str, rcpt: str = "out@remote.example") -> bool:
    """Send one message to the port-25 listener; True when it was acknowledged (250)."""
    msg = (f"From: sender@cx.example\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
           f"Message-ID: <{subject}@test>\r\n\r\nbody of {subject}\r\n").encode()
    try:
        await aiosmtplib.send(msg, sender="sender@cx.example", recipients=[rcpt],
                              hostname="127.0.0.1", port=port, start_tls=False, timeout=30)
        return True
    except (aiosmtplib.SMTPException, OSError):
        return False


async def wait_for(pred: Callable[[], Any], timeout: float, step: float = 0.05) -> bool:
    """Poll `pred` (sync or async) until true or `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)


async def running_server(url: str, state_dir: Path, **sections: dict[str, Any]) -> Any:
    """The whole server in this event loop on `url` (RunningServer), listeners on port 0."""
    from cxkernel.config import from_dict
    from gateway.app import RunningServer, open_services
    data: dict[str, dict[str, Any]] = {
        "server": {"domain": "cx.example", "state_dir": str(state_dir)},
        "database": {"url": url, "pool_min": 1, "pool_max": 10},
        "listen": {k: "127.0.0.1:0" for k in LISTENERS},
        "node": {"heartbeat_seconds": 0.5, "dead_seconds": 5},
    }
    for k, v in sections.items():
        data.setdefault(k, {}).update(v)
    services = await open_services(from_dict(data))
    server = RunningServer(services)
    await server.start()
    return server
