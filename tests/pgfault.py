"""A PostgreSQL of its own that a fault test (or benchmarks/fault_bench.py) may restart,
kill or stop, unlike the session server every other test shares.

Built on the pgserver wheel's binaries: `pgserver.get_server` makes and starts the cluster
(initdb, the `pgserver` system user when run as root), then `pg_ctl` stops and starts it
on the same Unix socket, so the URL stays valid across restarts.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import asyncpg


class RestartablePostgres:
    def __init__(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver
            from pgserver import _commands
        self._pg_ctl = _commands.pg_ctl
        self.tmp = Path(tempfile.mkdtemp(prefix="cxpgf"))
        self.pgdata = self.tmp / "pg"
        self._server: Any = pgserver.get_server(self.pgdata, cleanup_mode=None)
        self.admin_uri = str(self._server.get_uri())
        lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        self.socket_dir = lines[4]  # postmaster.pid line 5: the socket directory
        self._user = self._server.system_user
        self.running = True

    def url(self, dbname: str) -> str:
        base, _, query = self.admin_uri.partition("?")
        return base.rsplit("/", 1)[0] + "/" + dbname + ("?" + query if query else "")

    async def create_database(self, name: str) -> str:
        conn = await asyncpg.connect(self.admin_uri)
        try:
            await conn.execute(f'create database "{name}"')
        finally:
            await conn.close()
        return self.url(name)

    def _ctl(self, *args: str) -> None:
        self._pg_ctl(list(args), pgdata=self.pgdata, user=self._user, timeout=60)

    def stop(self, mode: str = "fast") -> None:
        """`fast`: a clean restart's first half; `immediate`: a crash (no checkpoint,
        recovery at the next start)."""
        self._ctl("-w", "-m", mode, "stop")
        self.running = False

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend: a crashed database host (recovery
        runs at the next start)."""
        pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        victims = [pid] + _children(pid)
        for p in victims:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_running(p) for p in victims):
            time.sleep(0.02)
        for p in victims:  # a dead postmaster that is our child stays a zombie until reaped
            try:
                os.waitpid(p, os.WNOHANG)
            except ChildProcessError:
                pass
        if _exists(pid):  # a zombie of another parent: its lock files would stop the start
            (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
            for lock in Path(self.socket_dir).glob(".s.PGSQL.*.lock"):
                lock.unlink(missing_ok=True)
        self.running = False

    def start(self) -> None:
        self._ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}",
                  "-l", str(self.pgdata / "log"), "start")
        self.running = True

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def close(self) -> None:
        if self.running:
            try:
                self.stop("immediate")
            except Exception:  # noqa: BLE001 - already gone
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)


def _exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"  # a zombie holds nothing


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ")"
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and fields[1] == str(pid):
            out.append(int(p.name))
    return out
