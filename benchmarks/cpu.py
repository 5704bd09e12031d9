"""Whole-server CPU for benchmarks: our process plus every PostgreSQL process of its cluster.

Rule 16: a benchmark counts the whole server. The embedded PostgreSQL's postmaster pid is
the first line of ``<pgdata>/postmaster.pid``; its live backends are its children, and the
CPU of backends that already exited is in the postmaster's ``children_*`` times (it reaps
them). A peer (Prosody, Dovecot, Postfix) is measured the same way: its processes and their
children.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil


def _own(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def _tree(pid: int) -> float:
    """CPU seconds of `pid`, its live descendants, and its reaped children."""
    try:
        root = psutil.Process(pid)
        t = root.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for c in root.children(recursive=True):
            try:
                total += _own(c)
            except psutil.NoSuchProcess:
                pass
        return total
    except psutil.NoSuchProcess:
        return 0.0


def postmaster_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().split()[0])


@dataclass(frozen=True)
class Sample:
    server: float
    database: float

    @property
    def total(self) -> float:
        return self.server + self.database

    def __sub__(self, other: Sample) -> Sample:
        return Sample(self.server - other.server, self.database - other.database)


class ServerCPU:
    """Samples (server, database) CPU seconds; `pgdata` None for a peer with no database
    process of its own (or whose storage is in-process, as Prosody with SQLite)."""

    def __init__(self, pids: list[int], pgdata: Path | None = None) -> None:
        self.pids, self.pgdata = pids, pgdata

    def sample(self) -> Sample:
        srv = sum(_tree(p) for p in self.pids)
        db = _tree(postmaster_pid(self.pgdata)) if self.pgdata else 0.0
        return Sample(srv, db)


def describe(d: Sample, n: int, wall: float, unit: str = "msg") -> str:
    """'server X µs + PostgreSQL Y µs = Z µs per msg (N% of a core)'."""
    return (f"CPU per {unit}: server {d.server / n * 1e6:.1f} µs + PostgreSQL "
            f"{d.database / n * 1e6:.1f} µs = {d.total / n * 1e6:.1f} µs "
            f"({d.total / wall * 100:.0f}% of a core)")
