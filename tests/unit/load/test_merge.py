"""Issue 17: a workday run in several generator processes is merged exactly: each process's
recorder travels as JSON (counts, errors, per-second buckets, HDR histograms in their
lossless encoding) and the merge equals one recorder that saw every outcome itself."""

from __future__ import annotations

import json
import random

from load.scenarios.workday import _part_summary, _share
from load.stats import PERCENTILES, Recorder, summarize


def _feed(recs: list[Recorder], n: int, t0: float) -> None:
    """Outcomes dealt round robin to `recs` (recs[0] is the single-process reference)."""
    rng = random.Random(7)
    for i in range(n):
        now = t0 + rng.uniform(0, 5)
        lat = rng.lognormvariate(-3, 1.2)  # ~50 ms, long tail
        shard = recs[1 + i % (len(recs) - 1)]
        for r in (recs[0], shard):
            r.started(1, 2048, now=now)
            if i % 97 == 0:
                r.fail("smtp-4xx", now=now, detail="451 try later")
            elif i % 211 == 0:
                r.lose("timeout", now=now)
            else:
                r.accept(1, lat, now=now)
            r.record_latency("lag", lat / 10)


def test_to_dict_round_trip_is_lossless() -> None:
    rec = Recorder(t0=100.0)
    _feed([rec, Recorder(t0=100.0)], 500, 100.0)
    rec.finish()
    back = Recorder.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert back.to_dict() == rec.to_dict()
    for name in rec.hists:
        assert summarize(back.hists[name]) == summarize(rec.hists[name])


def test_merge_of_processes_equals_one_recorder() -> None:
    t0 = 1000.0
    whole = Recorder(t0=t0)
    shards = [Recorder(t0=t0) for _ in range(3)]
    _feed([whole, *shards], 5000, t0)
    for r in (whole, *shards):
        r.t_end = t0 + 5.0
    travelled = [Recorder.from_dict(json.loads(json.dumps(r.to_dict()))) for r in shards]
    merged = Recorder(t0=t0)
    for r in travelled:
        merged.merge(r)
    for k in ("sent", "accepted", "delivered", "failed", "lost", "messages_sent",
              "messages_accepted", "bytes_sent"):
        assert getattr(merged, k) == getattr(whole, k), k
    assert merged.balanced() and merged.sent == 5000
    assert merged.errors == whole.errors and merged.failed > 0 and merged.lost > 0
    for name in ("latency", "lag"):
        a, b = merged.hist(name), whole.hist(name)
        assert a.get_total_count() == b.get_total_count()
        for p in [*PERCENTILES.values(), 1.0, 25.0, 75.0, 99.99, 100.0]:
            assert a.get_value_at_percentile(p) == b.get_value_at_percentile(p), (name, p)
        assert a.get_max_value() == b.get_max_value() and a.get_min_value() == b.get_min_value()
    assert merged.timeseries() == whole.timeseries()
    # the per-part line of the report: the same numbers from shards as from one process
    assert _part_summary(travelled, t0) == _part_summary([whole], t0)


def test_shares_add_up() -> None:
    for total in range(0, 23):
        for n in range(1, 6):
            assert sum(_share(total, i, n) for i in range(n)) == total
