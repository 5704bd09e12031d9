"""The workday scenario against our server at several accelerations, each on a fresh server.

    .venv/bin/python benchmarks/peers/run_workday.py [--accel 10 100 300] [--duration 30] \
        [--processes N] [--only mail|imap|chat|docs]

For each acceleration: start `cxgw serve` on a fresh state dir (embedded PostgreSQL, SMTP,
submission, IMAPS, XMPP on loopback ports), `cxgw demo seed` (2,700 accounts), run
`cxgw load workday` with `--json` and `--report` into --out (default /tmp/cxgw-workday),
print one line per protocol part (p99 per part) and stop the server. Beside the rates it
prints who used the CPU during the load: the server (our process + PostgreSQL, rule 16,
benchmarks/cpu.py) and the load generator (its N processes, `--processes`), in cores, and
the machine's load average, so a reader sees whether the server or the generator is the
limit. `--stop-when-missed`
skips the higher accelerations once a run did not hold its rates (tickets not started).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_peers import PY, ROOT, Ours  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cpu import ServerCPU  # noqa: E402


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(accel: float, args: argparse.Namespace, out: Path) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="cxgw-workday-"))
    # the workday's staff mail and the mayor's circulars arrive on port 25 from the
    # generator on loopback as our own domain: a trusted network, as the config's doc says
    # for local tools (the default trusts none and refuses our domain there: 550 5.7.1)
    ours = Ours(tmp, args.accounts, '[smtp]\ntrusted_networks = ["127.0.0.0/8"]\n')
    try:
        p = ours.ports
        stem = out / (f"workday-{accel:g}x" + (f"-{args.only}" if args.only else ""))
        ports = {"smtp": p["smtp"], "submission": p["submission"], "imaps": p["imaps"],
                 "xmpp": p["xmpp"]}
        only: list[str] = []
        if args.only:  # one part alone: the others' ports 0, no circulars
            keep = {"mail": "smtp", "imap": "imaps", "chat": "xmpp", "docs": "submission"}
            ports = {k: (v if k == keep[args.only] else 0) for k, v in ports.items()}
            only = ["--circulars-per-day", "0"]
        server = ServerCPU([ours.proc.pid], ours.state / "var" / "pg")
        s0, g0, load0 = server.sample(), _children_cpu(), os.getloadavg()
        subprocess.run([PY, "-m", "load", "workday", "--target", "127.0.0.1", "--insecure",
                        "--credentials", str(ours.creds), "--acceleration", f"{accel:g}",
                        "--duration", f"{args.duration:g}", "--seed", "1",
                        "--smtp-port", str(ports["smtp"]),
                        "--submission-port", str(ports["submission"]),
                        "--imaps-port", str(ports["imaps"]), "--xmpp-port", str(ports["xmpp"]),
                        "--processes", str(args.processes), *only,
                        "--quiet", "--json", f"{stem}.json", "--report", f"{stem}.html"],
                       cwd=ROOT, check=False)
        d = server.sample() - s0
        r = dict(json.loads(Path(f"{stem}.json").read_text()))
        # the generator's CPU while it ran the load (its processes' own figures), not its
        # interpreter start-up or the HTML report drawn afterwards (those are in `g0`'s
        # delta: printed too)
        gen = float(r["generator"]["cpu_total_s"])
        whole = _children_cpu() - g0
        wall = float(r.get("wall_s") or r["elapsed_s"])
        r["cpu"] = {"server_cores": round(d.server / wall, 3),
                    "postgresql_cores": round(d.database / wall, 3),
                    "generator_cores": round(gen / wall, 3), "wall_s": wall,
                    "generator_with_startup_and_report_s": round(whole, 3),
                    "loadavg_before": [round(x, 2) for x in load0],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                    "cpus": os.cpu_count(),
                    # per operation delivered (the whole run: with --only, that part's)
                    "per_op_us": {k: round(v / max(r["delivered"], 1) * 1e6) for k, v in
                                  (("server", d.server), ("postgresql", d.database),
                                   ("generator", gen))}}
        Path(f"{stem}.json").write_text(json.dumps(r, indent=1))
        return r
    finally:
        ours.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}"


def _held(s: dict, asked: float | None) -> str:
    """Issue 17's bar for a part: all it was asked started (none left `not_started`),
    nothing failed or lost, p99 under 200 ms."""
    p99 = s["latency_ms"].get("p99")
    ok = (not s.get("not_started") and not s["failed"] and not s["lost"]
          and p99 is not None and p99 < 200)
    return "held" if ok else "NOT held"


def show(accel: float, r: dict) -> None:
    rates = r["params"].get("rates_per_s", {})
    print(f"workday {accel:g}x: sent {r['sent']:,} delivered {r['delivered']:,} failed "
          f"{r['failed']:,} lost {r['lost']:,} not started {r.get('not_started', 0):,} "
          f"wall {r.get('wall_s')} s errors {r['errors']}")
    c = r.get("cpu")
    if c:
        gen = r.get("generator", {})
        print(f"  CPU (cores of {c['cpus']}): server {c['server_cores']} + PostgreSQL "
              f"{c['postgresql_cores']} | generator {c['generator_cores']} in "
              f"{gen.get('processes', 1)} process(es) {gen.get('cpu_s')} s | load average "
              f"before {c['loadavg_before'][0]} after {c['loadavg_after'][0]}")
        u = c["per_op_us"]
        print(f"  CPU per operation delivered: server {u['server']} µs + PostgreSQL "
              f"{u['postgresql']} µs | generator {u['generator']} µs")
    for name, s in r.get("protocols", {}).items():
        lat = s["latency_ms"]
        asked = rates.get(name)
        print(f"  {name:9} sent {s['sent']:>7,} ok {s['delivered']:>7,} failed {s['failed']:>4} "
              f"lost {s['lost']:>4} not_started {s.get('not_started') or 0:>6,} "
              f"{s['throughput_per_s'] or 0:>8.1f}/s (asked {_fmt(asked)})  p50 {lat['p50']} "
              f"p99 {lat['p99']} max {lat['max']} ms  {_held(s, asked)}")
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accel", type=float, nargs="+", default=[10.0, 100.0, 300.0])
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--accounts", type=int, default=2700)
    ap.add_argument("--processes", type=int, default=1,
                    help="load generator processes (`cxgw load workday --processes`)")
    ap.add_argument("--only", choices=["mail", "imap", "chat", "docs"], default=None,
                    help="run one part alone (CPU per operation of that part)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/cxgw-workday"))
    ap.add_argument("--stop-when-missed", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for accel in args.accel:
        r = run(accel, args, args.out)
        show(accel, r)
        if args.stop_when_missed and (r.get("not_started") or r["failed"] or r["lost"]):
            print(f"{accel:g}x did not hold: stopping here")
            break


if __name__ == "__main__":
    main()
