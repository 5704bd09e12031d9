"""The workday scenario against our server at several accelerations, each on a fresh server.

    .venv/bin/python benchmarks/peers/run_workday.py [--accel 10 100 300] [--duration 30]

For each acceleration: start `cxgw serve` on a fresh state dir (embedded PostgreSQL, SMTP,
submission, IMAPS, XMPP on loopback ports), `cxgw demo seed` (2,700 accounts), run
`cxgw load workday` with `--json` and `--report` into --out (default /tmp/cxgw-workday),
print one line per protocol part (p99 per part) and stop the server. `--stop-when-missed`
skips the higher accelerations once a run did not hold its rates (tickets not started).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_peers import PY, ROOT, Ours  # noqa: E402


def run(accel: float, args: argparse.Namespace, out: Path) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="cxgw-workday-"))
    ours = Ours(tmp, args.accounts)
    try:
        p = ours.ports
        stem = out / f"workday-{accel:g}x"
        subprocess.run([PY, "-m", "load", "workday", "--target", "127.0.0.1", "--insecure",
                        "--credentials", str(ours.creds), "--acceleration", f"{accel:g}",
                        "--duration", f"{args.duration:g}", "--seed", "1",
                        "--smtp-port", str(p["smtp"]), "--submission-port", str(p["submission"]),
                        "--imaps-port", str(p["imaps"]), "--xmpp-port", str(p["xmpp"]),
                        "--quiet", "--json", f"{stem}.json", "--report", f"{stem}.html"],
                       cwd=ROOT, check=False)
        return dict(json.loads(Path(f"{stem}.json").read_text()))
    finally:
        ours.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def show(accel: float, r: dict) -> None:
    rates = r["params"].get("rates_per_s", {})
    print(f"workday {accel:g}x: sent {r['sent']:,} delivered {r['delivered']:,} failed "
          f"{r['failed']:,} lost {r['lost']:,} not started {r.get('not_started', 0):,} "
          f"wall {r.get('wall_s')} s errors {r['errors']}")
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
