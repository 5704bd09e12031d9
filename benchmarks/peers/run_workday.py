"""The workday scenario against our server at several accelerations, each on a fresh server.

    .venv/bin/python benchmarks/peers/run_workday.py [--accel 10 100 300] [--duration 30] \
        [--processes N]

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
        stem = out / f"workday-{accel:g}x"
        server = ServerCPU([ours.proc.pid], ours.state / "var" / "pg")
        s0, g0, load0 = server.sample(), _children_cpu(), os.getloadavg()
        subprocess.run([PY, "-m", "load", "workday", "--target", "127.0.0.1", "--insecure",
                        "--credentials", str(ours.creds), "--acceleration", f"{accel:g}",
                        "--duration", f"{args.duration:g}", "--seed", "1",
                        "--smtp-port", str(p["smtp"]), "--submission-port", str(p["submission"]),
                        "--imaps-port", str(p["imaps"]), "--xmpp-port", str(p["xmpp"]),
                        "--processes", str(args.processes),
                        "--quiet", "--json", f"{stem}.json", "--report", f"{stem}.html"],
                       cwd=ROOT, check=False)
        d, gen = server.sample() - s0, _children_cpu() - g0  # the load ran in a waited child
        r = dict(json.loads(Path(f"{stem}.json").read_text()))
        wall = float(r.get("wall_s") or r["elapsed_s"])
        r["cpu"] = {"server_cores": round(d.server / wall, 3),
                    "postgresql_cores": round(d.database / wall, 3),
                    "generator_cores": round(gen / wall, 3), "wall_s": wall,
                    "loadavg_before": [round(x, 2) for x in load0],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                    "cpus": os.cpu_count()}
        Path(f"{stem}.json").write_text(json.dumps(r, indent=1))
        return r
    finally:
        ours.stop()
        shutil.rmtree(tmp, ignore_errors=True)


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
    for name, s in r.get("protocols", {}).items():
        lat = s["latency_ms"]
        asked = rates.get(name)
        print(f"  {name:9} sent {s['sent']:>7,} ok {s['delivered']:>7,} failed {s['failed']:>4} "
              f"lost {s['lost']:>4} not_started {s.get('not_started') or 0:>6,} "
              f"{s['throughput_per_s'] or 0:>8.1f}/s (asked {asked})  p50 {lat['p50']} "
              f"p99 {lat['p99']} max {lat['max']} ms")
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accel", type=float, nargs="+", default=[10.0, 100.0, 300.0])
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--accounts", type=int, default=2700)
    ap.add_argument("--processes", type=int, default=1,
                    help="load generator processes (`cxgw load workday --processes`)")
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
