"""Cross-node XMPP benchmark (not a test): routing on one node vs between two nodes.

    .venv/bin/python benchmarks/xmpp_nodes_bench.py [--pairs 20] [--window 20] [--seconds 8]
        [--archive never|always] [--sm]

Starts one PostgreSQL (pgserver, as the fault tests do) and two `cxgw serve` processes on
it, seeds `2 * pairs` accounts, then runs the closed-loop chat of
`benchmarks/xmpp_bench.py` twice in the same run (compare the two, not across runs):

- local: both partners of each pair on node A;
- cross: one partner on node A, the other on node B (every message is a hand-off:
  a row in `xmpp_handoff` + a NOTIFY on the target node's channel, batched per
  transaction, then the row's delete by the receiver).

Reports msg/s, latency p50/p99, CPU per message (both servers + PostgreSQL), and the
PostgreSQL work per cross-node message: commits and rows written (pg_stat_database),
from which the NOTIFY and transaction rates in docs/scale.md are derived.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import xmpp_bench as xb  # noqa: E402
from cpu import ServerCPU, describe  # noqa: E402

from tests.integration.faultutil import LISTENERS  # noqa: E402
from tests.pgfault import RestartablePostgres  # noqa: E402


def toml_for(cfg: dict[str, dict[str, Any]]) -> str:
    lines = []
    for section, values in cfg.items():
        lines.append(f"[{section}]")
        for k, v in values.items():
            lines.append(f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}")
    return "\n".join(lines) + "\n"


async def db_stats(url: str) -> tuple[int, int]:
    import asyncpg
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "select xact_commit, tup_inserted + tup_deleted + tup_updated as w"
            " from pg_stat_database where datname = current_database()")
        return int(row["xact_commit"]), int(row["w"])
    finally:
        await conn.close()


async def run(args: argparse.Namespace, ports: list[int], url: str, cpu: ServerCPU,
              cross: bool) -> None:
    n = 2 * args.pairs
    conns = [await xb.login(ports[1 if cross and i % 2 else 0], f"p{i:04d}", presence=True)
             for i in range(n)]
    if args.sm:  # XEP-0198, resumable: cross-node messages are marked with their position
        for c in conns:
            c.writer.write(b"<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    await asyncio.sleep(1.0)  # presence and the registry settle on both nodes
    stop = asyncio.Event()
    lat: list[float] = []
    count = [0]
    tasks = [asyncio.create_task(xb.pair_loop(conns[i], conns[i ^ 1].jid.split("/")[0],
                                              args.window, stop, lat, count, args.sm))
             for i in range(n)]
    await asyncio.sleep(2)  # warm-up
    lat.clear()
    x0, w0 = await db_stats(url)
    c0, s0, t0 = count[0], cpu.sample(), time.perf_counter()
    await asyncio.sleep(args.seconds)
    c1, used, t1 = count[0], cpu.sample() - s0, time.perf_counter()
    x1, w1 = await db_stats(url)
    stop.set()
    msgs = max(c1 - c0, 1)
    print(f"{'cross-node' if cross else 'one node  '}: {args.pairs} pairs x {args.window} "
          f"in flight, archive {args.archive}{', SM' if args.sm else ''}: {msgs / (t1 - t0):,.0f} msg/s, "
          f"{describe(used, msgs, t1 - t0)}, latency p50 {xb.pct(lat, .5) * 1000:.2f} ms"
          f" p99 {xb.pct(lat, .99) * 1000:.2f} ms; PostgreSQL: "
          f"{(x1 - x0) / (t1 - t0):,.0f} commits/s ({(x1 - x0) / msgs:.3f} per msg), "
          f"{(w1 - w0) / msgs:.2f} rows written per msg", flush=True)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in conns:
        c.writer.close()
    await asyncio.sleep(1.5)


@contextlib.asynccontextmanager
async def two_nodes(xmpp: dict[str, Any], users: list[tuple[str, str]], units: set[str],
                    prefix: str) -> AsyncIterator[tuple[list[Any], list[int], str, ServerCPU]]:
    """Two `cxgw serve` (XMPP only) on one PostgreSQL of their own, `users` seeded:
    yields (processes, their XMPP ports, the database URL, a CPU meter of both servers
    and PostgreSQL); stops everything and shows a node's traceback if it logged one."""
    pg = RestartablePostgres()
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    procs: list[Any] = []
    try:
        url = await pg.create_database("bench")
        ports = [xb.free_port(), xb.free_port()]
        base: dict[str, dict[str, Any]] = {
            "server": {"domain": xb.DOMAIN, "state_dir": str(tmp / "a")},
            "database": {"url": url, "pool_min": 2, "pool_max": 10},
            "listen": {k: "" for k in LISTENERS} | {"xmpp": f"127.0.0.1:{ports[0]}"},
            "xmpp": {"rate_bytes_per_s": 100_000_000} | xmpp,
        }
        await xb.seed(base, users, units)
        for i, name in enumerate("ab"):
            cfg = {k: dict(v) for k, v in base.items()}
            cfg["server"]["state_dir"] = str(tmp / name)
            cfg["listen"]["xmpp"] = f"127.0.0.1:{ports[i]}"
            path = tmp / f"{name}.toml"
            path.write_text(toml_for(cfg))
            procs.append(xb.start_server(path, tmp / f"{name}.log"))
        yield procs, ports, url, ServerCPU([p.pid for p in procs], pg.pgdata)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        pg.stop()
        for name in "ab":
            log = tmp / f"{name}.log"
            if log.exists() and "Traceback" in log.read_text():
                print(f"node {name} log:\n{log.read_text()[-3000:]}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(pg.tmp, ignore_errors=True)


async def main_async(args: argparse.Namespace) -> None:
    users = [(f"p{i:04d}", f"pair{i // 2:03d}") for i in range(2 * args.pairs)]
    async with two_nodes({"archive_default": args.archive}, users, {u for _, u in users},
                         "cxnodes") as (procs, ports, url, cpu):
        print(f"two nodes (pids {procs[0].pid}, {procs[1].pid}) on one PostgreSQL", flush=True)
        await run(args, ports, url, cpu, cross=False)
        await run(args, ports, url, cpu, cross=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--archive", choices=("never", "always"), default="never")
    ap.add_argument("--sm", action="store_true",
                    help="clients enable resumable stream management (XEP-0198) and ack")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
