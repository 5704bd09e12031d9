"""Counting and timing: exact accounting, HDR latency histograms, per-second time series.

The unit of accounting is a *delivery*: one message to one recipient. A message to three
recipients counts three deliveries, so `smtp-circular` (one message, all recipients) and
`smtp-burst` (many messages, one recipient each) report in the same unit. The invariant
`sent == delivered + failed + lost` holds exactly at the end of every run:

- sent: deliveries the harness started (a transaction was attempted for them);
- delivered: accepted with 250 (and, with IMAP verification, seen in the mailbox);
- failed: refused with a reply (4xx/5xx) or never handed over (connect, TLS, protocol error);
- lost: handed over but fate unknown (timeout or disconnect after the final dot), or
  accepted but not seen in the mailbox before the verification deadline.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

PERCENTILES: dict[str, float] = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}
CURVE_STEPS_PER_DECADE = 20  # points per decade of 1 / (1 - p) on the percentile curve
_HIST_MAX_US = 3_600_000_000  # one hour in microseconds


def new_histogram() -> HdrHistogram:
    """Microsecond histogram from 1 µs to 1 h with 3 significant digits."""
    return HdrHistogram(1, _HIST_MAX_US, 3)


def summarize(h: HdrHistogram) -> dict[str, float | None]:
    """p50/p90/p99/p999/max/mean in milliseconds (None when empty)."""
    if h.get_total_count() == 0:
        return {**{k: None for k in PERCENTILES}, "max": None, "mean": None, "count": 0}
    out: dict[str, float | None] = {k: h.get_value_at_percentile(p) / 1000.0
                                    for k, p in PERCENTILES.items()}
    out["max"] = h.get_max_value() / 1000.0
    out["mean"] = round(h.get_mean_value() / 1000.0, 3)
    out["count"] = h.get_total_count()
    return out


def percentile_curve(h: HdrHistogram) -> list[list[float]]:
    """[[percentile, ms], ...] for the HdrHistogram-style plot, then [100, max].

    Points are evenly spaced on the log axis of 1 / (1 - p) (0%, ..., 90%, ..., 99%, ...),
    up to the percentile the sample count resolves (1 - 1/count, at most 99.9999%).
    """
    n = h.get_total_count()
    if n == 0:
        return []
    out = []
    k = 0
    while 10 ** (k / CURVE_STEPS_PER_DECADE) <= min(n, 1e6):
        p = 100.0 * (1.0 - 10 ** (-k / CURVE_STEPS_PER_DECADE))
        out.append([round(p, 6), h.get_value_at_percentile(p) / 1000.0])
        k += 1
    out.append([100.0, h.get_max_value() / 1000.0])
    return out


@dataclass
class Bucket:
    """One second of the run."""

    started: int = 0
    delivered: int = 0
    failed: int = 0
    lost: int = 0
    lat_sum_us: int = 0
    lat_n: int = 0
    lat_max_us: int = 0


@dataclass
class Recorder:
    """Collects every outcome of a run; cheap enough to call per message."""

    t0: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)
    sent: int = 0
    accepted: int = 0
    delivered: int = 0
    failed: int = 0
    lost: int = 0
    messages_sent: int = 0
    messages_accepted: int = 0
    connections_opened: int = 0
    bytes_sent: int = 0
    not_started: int = 0  # open loop: due but never started before the end (fell behind)
    errors: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=dict)  # class -> first few texts
    hists: dict[str, HdrHistogram] = field(default_factory=dict)
    buckets: list[Bucket] = field(default_factory=list)
    ended_wall: float | None = None
    t_end: float | None = None
    # latencies (µs) since the live display last took them; None unless a display is on
    tap: list[int] | None = None

    def _bucket(self, now: float) -> Bucket:
        i = max(0, int(now - self.t0))
        while len(self.buckets) <= i:
            self.buckets.append(Bucket())
        return self.buckets[i]

    def hist(self, name: str) -> HdrHistogram:
        h = self.hists.get(name)
        if h is None:
            h = self.hists[name] = new_histogram()
        return h

    def record_latency(self, name: str, seconds: float) -> None:
        us = max(1, min(int(seconds * 1e6), _HIST_MAX_US))
        self.hist(name).record_value(us)
        if self.tap is not None and name == "latency":
            self.tap.append(us)

    def take_tap(self) -> list[int]:
        """Latencies recorded since the last call (starts tapping on the first call)."""
        got, self.tap = self.tap or [], []
        return got

    # -- outcomes ------------------------------------------------------------------------
    def started(self, deliveries: int, nbytes: int = 0, now: float | None = None) -> None:
        """A message with `deliveries` recipients is about to be sent."""
        self.sent += deliveries
        self.messages_sent += 1
        self.bytes_sent += nbytes
        self._bucket(now or time.monotonic()).started += deliveries

    def note(self, cls: str, text: str) -> None:
        """Keep the first three server texts of an error class (shown in the result)."""
        got = self.samples.setdefault(cls, [])
        if len(got) < 3 and text:
            got.append(text[:200])

    def fail(self, cls: str, deliveries: int = 1, now: float | None = None,
             detail: str = "") -> None:
        """Deliveries refused or never handed over; `cls` like `smtp-5xx`, `connect`."""
        if deliveries <= 0:
            return
        if detail:
            self.note(cls, detail)
        self.failed += deliveries
        self.errors[cls] += deliveries
        self._bucket(now or time.monotonic()).failed += deliveries

    def lose(self, cls: str, deliveries: int = 1, now: float | None = None) -> None:
        """Deliveries whose fate is unknown (`timeout`, `disconnect`, `not-seen`)."""
        if deliveries <= 0:
            return
        self.lost += deliveries
        self.errors[cls] += deliveries
        self._bucket(now or time.monotonic()).lost += deliveries

    def accept(self, deliveries: int, latency_s: float, now: float | None = None,
               pending: int = 0) -> None:
        """The server said 250 for a message carrying `deliveries` accepted recipients.

        `pending` of them wait for mailbox verification and count as delivered only once
        `seen` (or as lost by `lose("not-seen")`).
        """
        now = now or time.monotonic()
        self.accepted += deliveries
        self.messages_accepted += 1
        self.record_latency("latency", latency_s)
        b = self._bucket(now)
        us = int(latency_s * 1e6)
        b.lat_sum_us += us
        b.lat_n += 1
        b.lat_max_us = max(b.lat_max_us, us)
        self.delivered += deliveries - pending
        b.delivered += deliveries - pending

    def seen(self, e2e_s: float, now: float | None = None) -> None:
        """One accepted delivery showed up in its mailbox after `e2e_s` seconds."""
        self.delivered += 1
        self.record_latency("e2e", e2e_s)
        self._bucket(now or time.monotonic()).delivered += 1

    def merge(self, other: Recorder) -> None:
        """Add another run's outcomes (a part of a composite run such as `workday`)."""
        for name in self._COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.update(other.errors)
        for cls, texts in other.samples.items():
            for t in texts:
                self.note(cls, t)
        for name, h in other.hists.items():
            self.hist(name).add(h)
        offset = max(0, int(other.t0 - self.t0))
        for i, b in enumerate(other.buckets):
            mine = self._bucket(self.t0 + offset + i + 0.5)
            mine.started += b.started
            mine.delivered += b.delivered
            mine.failed += b.failed
            mine.lost += b.lost
            mine.lat_sum_us += b.lat_sum_us
            mine.lat_n += b.lat_n
            mine.lat_max_us = max(mine.lat_max_us, b.lat_max_us)

    def finish(self) -> None:
        self.t_end = time.monotonic()
        self.ended_wall = time.time()

    # -- across processes ----------------------------------------------------------------
    _COUNTS = ("sent", "accepted", "delivered", "failed", "lost", "messages_sent",
               "messages_accepted", "connections_opened", "bytes_sent", "not_started")

    def to_dict(self) -> dict[str, Any]:
        """Everything `merge` uses, JSON-ready: counts, errors, samples, each histogram in
        HdrHistogram's own compressed encoding (lossless: every bucket count is kept), and
        the per-second buckets. `t0`/`t_end` are CLOCK_MONOTONIC, shared by every process
        of the machine, so a parent can put its children's recorders on one clock."""
        return {"t0": self.t0, "started_wall": self.started_wall, "t_end": self.t_end,
                "ended_wall": self.ended_wall,
                **{k: getattr(self, k) for k in self._COUNTS},
                "errors": dict(self.errors), "samples": self.samples,
                "hists": {k: h.encode().decode("ascii") for k, h in self.hists.items()},
                "buckets": [[b.started, b.delivered, b.failed, b.lost, b.lat_sum_us, b.lat_n,
                             b.lat_max_us] for b in self.buckets]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recorder:
        """The inverse of `to_dict` (a recorder filled in another process)."""
        rec = cls(t0=float(d["t0"]), started_wall=float(d["started_wall"]))
        rec.t_end, rec.ended_wall = d.get("t_end"), d.get("ended_wall")
        for k in cls._COUNTS:
            setattr(rec, k, int(d[k]))
        rec.errors = Counter({str(k): int(v) for k, v in d["errors"].items()})
        rec.samples = {str(k): list(v) for k, v in d["samples"].items()}
        rec.hists = {k: HdrHistogram.decode(v.encode("ascii")) for k, v in d["hists"].items()}
        rec.buckets = [Bucket(*map(int, b)) for b in d["buckets"]]
        return rec

    # -- views ---------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        end = self.t_end if self.t_end is not None else time.monotonic()
        return max(end - self.t0, 1e-9)

    def balanced(self) -> bool:
        return self.sent == self.delivered + self.failed + self.lost

    def timeseries(self) -> list[dict[str, Any]]:
        return [{"t": i, "started": b.started, "delivered": b.delivered, "failed": b.failed,
                 "lost": b.lost,
                 "latency_mean_ms": round(b.lat_sum_us / b.lat_n / 1000, 3) if b.lat_n else None,
                 "latency_max_ms": round(b.lat_max_us / 1000, 3) if b.lat_n else None}
                for i, b in enumerate(self.buckets)]
