"""Fault benchmark (issue 13): what a sender's 250 is worth when things break.

Two `cxgw serve` processes share one PostgreSQL of their own (pgserver binaries, see
tests/pgfault.py); an SMTP sink on 127.0.0.1 stands for the smarthost and counts each
message by its Subject, only when its 250 can still reach the node (tests/integration/
faultutil.py). For each fault, --messages messages go to the two nodes' port-25 listener
(relay for 127.0.0.0/8) spread over --seconds; the fault strikes a second in; then we wait for
the queue to drain and print, per fault:

  sent          messages offered
  acked         250 replies (the message is ours)
  delivered     distinct messages the sink accepted
  duplicated    extra copies the sink accepted
  lost          acknowledged but never delivered (must be 0)
  listen_back   seconds from the database accepting connections again to node A's LISTEN
                connection being back (database faults only; from node A's log)

Faults: none; pg-restart (fast stop, start); pg-kill (SIGKILL of every PostgreSQL
process, crash recovery); node-kill (SIGKILL of node A; B takes its leases over once A's
heartbeat is older than node.dead_seconds); slow-dest (the sink answers DATA after
lease + dead_seconds + 1 s, so an unrenewed lease would be lost and sent twice).

Configuration (stated, not the shipped defaults where a fault needs it short):
queue.lease_seconds 5, node.heartbeat_seconds 0.5, node.dead_seconds 3, queue.retry_initial
1, retry_max 2, per_destination 20; everything else shipped defaults.

    .venv/bin/python benchmarks/fault_bench.py [--messages 200] [--seconds 5] [--faults none,pg-restart]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.faultutil import Serve, Sink, free_port, send, write_config  # noqa: E402
from tests.pgfault import RestartablePostgres  # noqa: E402

LEASE, HEARTBEAT, DEAD = 5, 0.5, 3.0
FAULTS = ("none", "pg-restart", "pg-kill", "node-kill", "slow-dest")


async def _drain(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = await asyncpg.connect(url)
            try:
                if not await conn.fetchval("select count(*) from queue"):
                    return True
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError):
            pass
        await asyncio.sleep(0.2)
    return False


def _listen_back(log: Path, since: float) -> float | None:
    """Seconds from 'database back' (the first LISTEN retry that worked) to 'LISTEN
    connection back', from node A's log lines after `since` (epoch seconds)."""
    lost = back = None
    for line in log.read_text(errors="replace").splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})", line)
        if not m:
            continue
        t = time.mktime(time.strptime(m.group(1)[:19], "%Y-%m-%d %H:%M:%S")) + int(
            m.group(1)[20:]) / 1000
        if t < since:
            continue
        if "LISTEN connection lost" in line and lost is None:
            lost = t
        if "LISTEN connection back" in line and lost is not None:
            back = t
            break
    return None if back is None else back


async def run_fault(fault: str, pg: RestartablePostgres, tmp: Path, n: int,
                    rate: float, run: int) -> dict[str, Any]:
    url = await pg.create_database(f"fault_{fault.replace('-', '_')}_{run}")
    port = free_port()
    delay = LEASE + DEAD + 1 if fault == "slow-dest" else 0.0
    sink = await Sink(delay).start(port)
    loop = asyncio.get_running_loop()
    nodes = [Serve(write_config(tmp / f"{fault}-{run}-{x}.toml", url, smarthost_port=port,
                                lease=LEASE, per_destination=20, heartbeat=HEARTBEAT,
                                dead=DEAD)) for x in "ab"]
    for node in nodes:
        await loop.run_in_executor(None, node.start)
    subjects = [f"{fault}-{i}" for i in range(n)]
    acked: dict[str, bool] = {}
    db_back_at: float | None = None
    fault_at = time.time()

    async def strike() -> None:
        nonlocal db_back_at, fault_at
        await asyncio.sleep(1.0)
        fault_at = time.time()
        if fault == "pg-restart":
            await loop.run_in_executor(None, pg.stop, "fast")
            await asyncio.sleep(1.0)
            await loop.run_in_executor(None, pg.start)
            db_back_at = time.time()
        elif fault == "pg-kill":
            await loop.run_in_executor(None, pg.kill)
            await asyncio.sleep(1.0)
            await loop.run_in_executor(None, pg.start)
            db_back_at = time.time()
        elif fault == "node-kill":
            nodes[0].kill()

    async def one(i: int, s: str) -> None:
        await asyncio.sleep(i / rate)
        node = nodes[i % 2]
        acked[s] = await send(node.ports["smtp"], s)

    t0 = time.monotonic()
    await asyncio.gather(strike(), *(one(i, s) for i, s in enumerate(subjects)))
    drained = await _drain(url, 120 + delay * n / 20)
    await asyncio.sleep(1.0)  # a late duplicate lands by now
    elapsed = time.monotonic() - t0
    for node in nodes:
        await loop.run_in_executor(None, node.stop)
    sink.close()
    ok = [s for s in subjects if acked.get(s)]
    back = None
    if db_back_at is not None:
        t = _listen_back(nodes[0].log, fault_at)
        back = None if t is None else round(max(t - db_back_at, 0.0), 2)
    return {
        "fault": fault, "sent": n, "acked": len(ok),
        "delivered": sum(1 for s in subjects if sink.counts[s] >= 1),
        "duplicated": sum(max(sink.counts[s] - 1, 0) for s in subjects),
        "lost": sum(1 for s in ok if sink.counts[s] == 0),
        "listen_back_s": back, "drained": drained, "seconds": round(elapsed, 1),
    }


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    pg = RestartablePostgres()
    tmp = Path(tempfile.mkdtemp(prefix="cxfault"))
    results = []
    try:
        for run, fault in enumerate(args.faults.split(",")):
            if fault not in FAULTS:
                raise SystemExit(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
            n = min(args.messages, 40) if fault == "slow-dest" else args.messages
            r = await run_fault(fault, pg, tmp, n, n / args.seconds, run)
            results.append(r)
            print(f"{r['fault']:<11} sent {r['sent']:>5}  acked {r['acked']:>5}  delivered "
                  f"{r['delivered']:>5}  duplicated {r['duplicated']:>3}  lost {r['lost']:>3}"
                  f"  listen_back {r['listen_back_s'] if r['listen_back_s'] is not None else '-':>5}"
                  f"  ({r['seconds']} s{'' if r['drained'] else ', queue NOT drained'})",
                  flush=True)
    finally:
        pg.close()
    return results


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=200)
    p.add_argument("--seconds", type=float, default=5.0,
                   help="spread the messages over this long (the fault strikes at 1 s)")
    p.add_argument("--faults", default=",".join(FAULTS))
    p.add_argument("--json", help="write the results here")
    a = p.parse_args()
    out = asyncio.run(main(a))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
