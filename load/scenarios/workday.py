"""workday: the whole city's working day, all protocols at once, at an acceleration.

Every account in --credentials (the demo file: 2,700 staff) is a person with per-hour
rates of simulated time: mail (`--mail-per-hour`, SMTP to a colleague), mail checks
(`--syncs-per-hour`, an IMAP sync), chat (`--chat-per-hour`, XMPP messages between
`--chat-pairs` online pairs), documents (`--docs-per-hour` per clerk, sealed by the server,
sent by mail form), and `--circulars-per-day` circulars to everyone (at least one per run
when positive), evenly spread. `--acceleration 100` squeezes 100 s of the day into 1 s of
run: rates are multiplied, the run lasts `--duration` seconds of real time (default 60,
i.e. 100 min of the day at 100x) and always stops by itself.

Each part runs as its own scenario (smtp-burst, imap-sync, xmpp-chat, doc-exchange,
smtp-circular, open loop at the computed rate) on its own port, all at once; the result
adds them up and keeps a per-protocol summary in `protocols` (sent, delivered, failed,
lost, throughput, latency percentiles, and for the report's per-protocol panels its
`timeseries` on the run's clock and its latency `curves`). A part whose port is 0 is left
out. The live display shows one row per part.

The mail and IMAP parts open `--connections` each; by default as many as the part's rate
needs by Little's law (rate x 250 ms, at least 20) within the shipped per-address caps of
`[limits]` (45 SMTP, 90 IMAPS from the generator's one address), so that the generator's
concurrency does not cap the asked rate. `--processes N` runs the generator in N
processes: process i drives every i-th account and 1/N of every rate and connection
count (process 0 also sends the circulars to everyone); each hands its recorders back as
JSON (HDR histograms in their lossless encoding) and the parent merges them exactly into
the one result. `generator` in the result gives each process's CPU seconds and the cores
the generator used, to set beside the server's (benchmarks/peers/run_workday.py prints both).
With several processes the live display shows the merged figures only at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from load.context import RunContext
from load.options import Credential, OptionError, add_common_arguments
from load.scenarios.base import Scenario
from load.stats import Recorder, percentile_curve, summarize

DAY_HOURS = 8.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, default_port=25)
    g = p.add_argument_group("the day")
    g.add_argument("--acceleration", type=float, default=10.0, metavar="X",
                   help="simulated seconds per real second (default 10)")
    g.add_argument("--staff", type=int, default=None, metavar="N",
                   help="use the first N accounts (default: all)")
    g.add_argument("--mail-per-hour", type=float, default=4.0, help="per person (default 4)")
    g.add_argument("--syncs-per-hour", type=float, default=4.0,
                   help="IMAP mail checks per person (default 4)")
    g.add_argument("--chat-per-hour", type=float, default=20.0, help="per person (default 20)")
    g.add_argument("--docs-per-hour", type=float, default=0.5, help="per clerk (default 0.5)")
    g.add_argument("--circulars-per-day", type=float, default=3.0, help="default 3")
    g.add_argument("--chat-pairs", type=int, default=50, help="online chat pairs (default 50)")
    g = p.add_argument_group("ports on --target's host (0 leaves a part out)")
    g.add_argument("--smtp-port", type=int, default=25)
    g.add_argument("--submission-port", type=int, default=587, help="STARTTLS + AUTH")
    g.add_argument("--imaps-port", type=int, default=993, help="implicit TLS")
    g.add_argument("--xmpp-port", type=int, default=5222, help="STARTTLS")
    g.add_argument("--domain", default=None, help="mail/XMPP domain (default: the accounts')")
    g = p.add_argument_group("the generator")
    g.add_argument("--processes", type=int, default=1, metavar="N",
                   help="run the generator in N processes, each driving 1/N of the staff "
                        "and of every rate; results merged exactly (default 1)")
    # --connections: per part (mail, imap), split between --processes; default: sized
    # from the part's rate (see _connections)
    p.set_defaults(duration=60.0, connections=None)


# The shipped per-address caps of [limits] (smtp_max_per_ip 50, imaps_max_per_ip 100): the
# generator connects from one address, so a part stays under them (the circulars' three
# SMTP connections included) or the server rightly refuses the surplus.
SMTP_PER_IP_BUDGET = 45
IMAP_PER_IP_BUDGET = 90
IN_FLIGHT_S = 0.25
"""Little's law: a part asked R/s whose operations take L s has R * L in flight. Sized for
L = 250 ms (above the 200 ms p99 target), so the generator's concurrency is not what caps
the rate while the server answers within the target."""


def _connections(args: argparse.Namespace, rate: float, budget: int) -> int:
    """A part's connections (all processes together): --connections, or from its rate."""
    if args.connections is not None:
        return int(args.connections)
    return max(20, min(budget, math.ceil(rate * IN_FLIGHT_S)))


def _share(total: int, i: int, n: int) -> int:
    """Shard `i` of `n`'s part of `total` items (the shares add up to `total`)."""
    return total // n + (1 if i < total % n else 0)


def _plan(args: argparse.Namespace, ctx: RunContext, n_people: int, units: int,
          shard: int, shards: int) -> tuple[list[tuple[str, str, list[str]]], dict[str, float],
                                            int, int]:
    """(parts, asked rates of the whole day, circulars, chat pairs) for shard `shard`.

    Every rate is the whole day's (all `n_people`) divided by `shards`; connections and
    chat pairs are split so that the shards add up to what one process would use; the
    circulars (to everyone) are sent by shard 0 only."""
    duration = ctx.limits.duration or 60.0
    accel = float(args.acceleration)
    host = ctx.target.host if ":" not in ctx.target.host else f"[{ctx.target.host}]"
    domain = args.domain

    def rate(per_hour: float, n: int) -> float:
        return per_hour * n * accel / 3600.0

    parts: list[tuple[str, str, list[str]]] = []  # (label, scenario, argv)
    asked: dict[str, float] = {}
    if args.smtp_port and args.mail_per_hour > 0:
        asked["mail"] = rate(args.mail_per_hour, n_people)
        parts.append(("mail", "smtp-burst", [
            "--target", f"{host}:{args.smtp_port}", "--rate", f"{asked['mail'] / shards:.6g}",
            "--connections",
            str(max(1, _share(_connections(args, asked["mail"], SMTP_PER_IP_BUDGET),
                              shard, shards))), "--size-dist", "2k:70,20k:25,200k:5", "--reuse"]))
    if args.imaps_port and args.syncs_per_hour > 0:
        asked["imap"] = rate(args.syncs_per_hour, n_people)
        parts.append(("imap", "imap-sync", [
            "--target", f"{host}:{args.imaps_port}", "--tls",
            "--rate", f"{asked['imap'] / shards:.6g}", "--connections",
            str(max(1, _share(_connections(args, asked["imap"], IMAP_PER_IP_BUDGET),
                              shard, shards)))]))
    pairs = min(args.chat_pairs, n_people // 2)
    my_pairs = _share(pairs, shard, shards)
    if args.xmpp_port and args.chat_per_hour > 0 and pairs > 0:
        asked["chat"] = rate(args.chat_per_hour, n_people)
        if my_pairs > 0:
            parts.append(("chat", "xmpp-chat", [
                "--target", f"{host}:{args.xmpp_port}", "--domain", domain,
                "--rate", f"{asked['chat'] * my_pairs / pairs:.6g}",
                "--connections", str(my_pairs), "--window", "8"]))
    clerks = 2 * units
    if args.submission_port and args.docs_per_hour > 0 and units >= 2:
        asked["docs"] = rate(args.docs_per_hour, clerks)
        docs_rate = asked["docs"] / shards
        parts.append(("docs", "doc-exchange", [
            "--target", f"{host}:{args.submission_port}", "--starttls",
            "--rate", f"{docs_rate:.6g}",
            # doc-exchange stops at its own --count (default 20): ask for the whole day's share
            "--count", str(max(1, math.ceil(docs_rate * duration))),
            "--connections", str(max(1, _share(min(10, clerks), shard, shards))),
            "--domain", domain]))
    circulars = 0
    if args.smtp_port and args.circulars_per_day > 0:
        circulars = max(1, round(args.circulars_per_day * duration * accel / 3600.0 / DAY_HOURS))
    return parts, asked, (circulars if shard == 0 else 0), pairs


def _people(ctx: RunContext, args: argparse.Namespace) -> list[Credential]:
    people = ctx.credentials[:args.staff] if args.staff else ctx.credentials
    if len(people) < 2:
        raise OptionError("workday needs --credentials with at least two accounts")
    if args.acceleration <= 0:
        raise OptionError("--acceleration must be positive")
    if args.processes < 1:
        raise OptionError("--processes must be at least 1")
    if args.processes > 1 and len(people) < 2 * args.processes:
        raise OptionError("--processes: every process needs at least two accounts")
    return people


def _write_creds(path: Path, people: list[Credential]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["address", "password", "unit"])
        for c in people:
            w.writerow([c.address, c.password, c.unit or ""])


async def _run_parts(ctx: RunContext, args: argparse.Namespace, shard: int, shards: int,
                     tmp: Path) -> tuple[dict[str, list[Recorder]], bool]:
    """Run this process's share of the day; return each part's recorders by label."""
    from load.cli import build_parser
    from load.scenarios import SCENARIOS

    people = _people(ctx, args)
    mine = people[shard::shards]
    args.domain = args.domain or people[0].address.rpartition("@")[2]
    units = len({c.unit for c in people if c.unit})
    parts, asked, circulars, pairs = _plan(args, ctx, len(people), units, shard, shards)
    duration = ctx.limits.duration or 60.0
    accel = float(args.acceleration)
    host = ctx.target.host if ":" not in ctx.target.host else f"[{ctx.target.host}]"
    everyone = tmp / f"everyone{shard}.csv"  # circulars and documents: all the staff
    _write_creds(everyone, people)
    own = tmp / f"shard{shard}.csv"
    _write_creds(own, mine)
    common = ["--duration", f"{duration:g}", "--max-duration", f"{ctx.limits.max_duration:g}",
              "--timeout", f"{ctx.timeout:g}", "--quiet"]
    if args.insecure:
        common.append("--insecure")
    if args.seed is not None:
        common += ["--seed", str(args.seed + shard)]
    if args.allow_remote:
        common.append("--allow-remote")
    ctx.params.update({"acceleration": accel, "staff": len(people),
                       "simulated_hours": round(duration * accel / 3600.0, 3),
                       "parts": list(asked), "circulars": circulars,
                       "chat_pairs": pairs, "rates_per_s": asked, "processes": shards})

    parser = build_parser()
    recs: dict[str, list[Recorder]] = {}
    completed = True
    for label in [p[0] for p in parts] + (["circular"] if circulars else []):
        ctx.live_parts[label] = []

    async def one(label: str, scenario: str, argv: list[str], creds: Path,
                  delay: float = 0.0) -> None:
        nonlocal completed
        if delay:
            await asyncio.sleep(delay)
        sargs = parser.parse_args(["load", scenario, *argv, *common,
                                   "--credentials", str(creds)])
        sctx = RunContext.from_args(scenario, sargs)
        sctx.run_id = f"{ctx.run_id}{shard}{label[:1]}{len(recs.get(label, []))}"
        ctx.live_parts[label].append(sctx.rec)
        try:
            await SCENARIOS[scenario].run(sctx, sargs)
        except OptionError as e:
            ctx.extra.setdefault("skipped", {})[label] = str(e)
        except Exception as e:  # a part that cannot start must not hide the others
            ctx.extra.setdefault("skipped", {})[label] = f"{type(e).__name__}: {e}"
        sctx.rec.finish()
        completed = completed and sctx.completed
        recs.setdefault(label, []).append(sctx.rec)

    # documents: the clerks are the 2nd and 3rd account of each unit in the whole file
    # (doc-exchange's rule), so every shard sends from them, at its share of the rate
    tasks = [one(*p, everyone if p[0] == "docs" else own) for p in parts]
    for i in range(circulars):
        tasks.append(one("circular", "smtp-circular", [
            "--target", f"{host}:{args.smtp_port}", "--count", "1", "--max-rcpts", "1000",
            "--connections", "3", "--from", f"mayor@{args.domain}"],
            everyone, delay=duration * (i + 0.5) / circulars))
    await asyncio.gather(*tasks)
    return recs, completed


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _shard_main(spec_path: str) -> None:
    """Entry point of one generator process: run its share, dump its recorders as JSON.

    Started by `_run_processes` as `python -c ...` with a spec file (the parsed options,
    the shard number, where to dump), so it works whatever the parent's main module is."""
    from load.cli import _run_coro

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    args = argparse.Namespace(**spec["args"])
    shard, shards, tmp = int(spec["shard"]), int(spec["shards"]), Path(spec["tmp"])
    ctx = RunContext.from_args("workday", args)
    ctx.run_id = str(spec["run_id"])

    async def go() -> tuple[dict[str, list[Recorder]], bool]:
        return await _run_parts(ctx, args, shard, shards, tmp)

    cpu0 = _cpu_self()  # the load's CPU, not the interpreter's start
    try:
        recs, completed = _run_coro(go())
        out: dict[str, Any] = {"parts": {k: [r.to_dict() for r in v] for k, v in recs.items()},
                               "completed": completed}
    except (OptionError, OSError) as e:
        out = {"parts": {}, "completed": False, "error": str(e)}
    out.update({"skipped": ctx.extra.get("skipped", {}), "params": ctx.params,
                "cpu_s": _cpu_self() - cpu0, "pid": os.getpid()})
    Path(spec["dump"]).write_text(json.dumps(out), encoding="utf-8")


async def _run_processes(ctx: RunContext, args: argparse.Namespace,
                         tmp: Path) -> tuple[dict[str, list[Recorder]], bool, list[float]]:
    """Start --processes generator processes and collect their recorders (exact merge:
    counts add up, histograms travel in HdrHistogram's lossless encoding) and their CPU."""
    _people(ctx, args)  # refuse bad options here, not N times in the children
    n = int(args.processes)
    argv = {k: v for k, v in vars(args).items() if not callable(v)}
    procs = []
    for i in range(n):
        spec = tmp / f"spec{i}.json"
        spec.write_text(json.dumps({"args": argv, "shard": i, "shards": n, "tmp": str(tmp),
                                    "run_id": ctx.run_id, "dump": str(tmp / f"dump{i}.json")}),
                        encoding="utf-8")
        procs.append(await asyncio.create_subprocess_exec(
            sys.executable, "-c",
            "import sys; from load.scenarios.workday import _shard_main; _shard_main(sys.argv[1])",
            str(spec)))
    try:
        codes = [await proc.wait() for proc in procs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
    recs: dict[str, list[Recorder]] = {}
    completed = True
    cpu: list[float] = []
    for i in range(n):
        path = tmp / f"dump{i}.json"
        if not path.exists():
            raise OSError(f"generator process {i} died (exit code {codes[i]})")
        d = json.loads(path.read_text(encoding="utf-8"))
        if d.get("error"):
            raise OptionError(d["error"])
        completed = completed and bool(d["completed"])
        cpu.append(float(d["cpu_s"]))
        ctx.extra.setdefault("skipped", {}).update(d["skipped"])
        if i == 0:
            ctx.params.update(d["params"])
        for label, dumps in d["parts"].items():
            for rd in dumps:
                recs.setdefault(label, []).append(Recorder.from_dict(rd))
    if not ctx.extra.get("skipped"):
        ctx.extra.pop("skipped", None)
    for label in [*ctx.params.get("parts", []), "circular"]:  # the parts' order, as with one
        if label in recs:
            ctx.live_parts[label] = []
    return recs, completed, cpu


def _part_summary(recs: list[Recorder], t0: float) -> dict[str, Any]:
    """One part's line in `protocols`, from its recorders (all processes, all runs)."""
    merged = Recorder(t0=t0)  # the part's recorders on the run's clock
    for r in recs:
        merged.merge(r)
    start = min(r.t0 for r in recs)
    end = max(r.t_end if r.t_end is not None else r.t0 for r in recs)
    s: dict[str, Any] = {k: getattr(merged, k) for k in
                         ("sent", "delivered", "failed", "lost", "not_started")}
    s["throughput_per_s"] = round(merged.accepted / max(end - start, 1e-9), 3)
    s["latency_ms"] = {k: v for k, v in summarize(merged.hist("latency")).items()
                       if k in ("p50", "p90", "p99", "p999", "max", "count")}
    s["errors"] = dict(sorted(merged.errors.items()))
    s["timeseries"] = merged.timeseries()
    s["curves"] = {"latency_ms": percentile_curve(merged.hist("latency"))}
    if "e2e" in merged.hists:
        s["curves"]["e2e_latency_ms"] = percentile_curve(merged.hists["e2e"])
    return s


async def run(ctx: RunContext, args: argparse.Namespace) -> None:
    t_start = time.monotonic()
    cpu0 = _cpu_self()
    with tempfile.TemporaryDirectory(prefix="cxgw-workday-") as tmp:
        if args.processes > 1:
            recs, completed, cpu = await _run_processes(ctx, args, Path(tmp))
        else:
            recs, completed = await _run_parts(ctx, args, 0, 1, Path(tmp))
            cpu = []
    if recs:  # the run's clock starts with its first part (children start after the parent)
        ctx.rec.t0 = min(r.t0 for rs in recs.values() for r in rs)
        ctx.rec.started_wall = min(r.started_wall for rs in recs.values() for r in rs)
    for rs in recs.values():
        for r in rs:
            ctx.rec.merge(r)
    ctx.rec.finish()
    ctx.completed = completed
    ctx.extra["protocols"] = {label: _part_summary(recs[label], ctx.rec.t0)
                              for label in ctx.live_parts if recs.get(label)}
    wall = time.monotonic() - t_start
    ctx.extra["wall_s"] = round(wall, 3)
    # the generator's own CPU, to set beside the server's: who is the limit?
    own = _cpu_self() - cpu0
    ctx.extra["generator"] = {
        "processes": max(1, len(cpu)), "cpu_s": [round(c, 3) for c in cpu] or [round(own, 3)],
        "parent_cpu_s": round(own, 3) if cpu else 0.0,
        "cpu_total_s": round(sum(cpu) + own, 3),
        "cores": round((sum(cpu) + own) / max(wall, 1e-9), 3)}


SCENARIO = Scenario(name="workday", help="the whole city's day at an acceleration, all protocols",
                    default_port=25, add_arguments=add_arguments, run=run)
