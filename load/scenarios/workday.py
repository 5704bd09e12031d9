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
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from typing import Any

from load.context import RunContext
from load.options import OptionError, add_common_arguments
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
    p.set_defaults(duration=60.0, connections=20)


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("sent", "delivered", "failed", "lost", "not_started", "throughput_per_s",
            "latency_ms", "errors", "completed")
    out = {k: result.get(k) for k in keys}
    out["latency_ms"] = {k: v for k, v in (result.get("latency_ms") or {}).items()
                         if k in ("p50", "p90", "p99", "p999", "max", "count")}
    return out


async def run(ctx: RunContext, args: argparse.Namespace) -> None:
    from load.cli import build_parser
    from load.result import build_result
    from load.scenarios import SCENARIOS

    people = ctx.credentials[:args.staff] if args.staff else ctx.credentials
    if len(people) < 2:
        raise OptionError("workday needs --credentials with at least two accounts")
    if args.acceleration <= 0:
        raise OptionError("--acceleration must be positive")
    duration = ctx.limits.duration or 60.0
    accel = float(args.acceleration)
    sim_hours = duration * accel / 3600.0
    host = ctx.target.host if ":" not in ctx.target.host else f"[{ctx.target.host}]"
    domain = args.domain or people[0].address.rpartition("@")[2]
    creds_file = args.credentials
    common = ["--duration", f"{duration:g}", "--max-duration", f"{ctx.limits.max_duration:g}",
              "--timeout", f"{ctx.timeout:g}", "--credentials", creds_file, "--quiet"]
    if args.insecure:
        common.append("--insecure")
    if args.seed is not None:
        common += ["--seed", str(args.seed)]
    if args.allow_remote:
        common.append("--allow-remote")

    def rate(per_hour: float, n: int) -> float:
        return per_hour * n * accel / 3600.0

    parts: list[tuple[str, str, list[str]]] = []  # (label, scenario, argv)
    n = len(people)
    if args.smtp_port and args.mail_per_hour > 0:
        parts.append(("mail", "smtp-burst", [
            "--target", f"{host}:{args.smtp_port}", "--rate", f"{rate(args.mail_per_hour, n):.6g}",
            "--connections", str(ctx.limits.connections), "--size-dist", "2k:70,20k:25,200k:5",
            "--reuse"]))
    if args.imaps_port and args.syncs_per_hour > 0:
        parts.append(("imap", "imap-sync", [
            "--target", f"{host}:{args.imaps_port}", "--tls",
            "--rate", f"{rate(args.syncs_per_hour, n):.6g}",
            "--connections", str(ctx.limits.connections)]))
    pairs = min(args.chat_pairs, n // 2)
    if args.xmpp_port and args.chat_per_hour > 0 and pairs > 0:
        parts.append(("chat", "xmpp-chat", [
            "--target", f"{host}:{args.xmpp_port}", "--domain", domain,
            "--rate", f"{rate(args.chat_per_hour, n):.6g}", "--connections", str(pairs),
            "--window", "8"]))
    units = {c.unit for c in people if c.unit}
    clerks = 2 * len(units)
    if args.submission_port and args.docs_per_hour > 0 and len(units) >= 2:
        docs_rate = rate(args.docs_per_hour, clerks)
        parts.append(("docs", "doc-exchange", [
            "--target", f"{host}:{args.submission_port}", "--starttls",
            "--rate", f"{docs_rate:.6g}",
            # doc-exchange stops at its own --count (default 20): ask for the whole day's share
            "--count", str(max(1, math.ceil(docs_rate * duration))),
            "--connections", str(min(10, clerks)), "--domain", domain]))
    circulars = 0
    if args.smtp_port and args.circulars_per_day > 0:
        circulars = max(1, round(args.circulars_per_day * sim_hours / DAY_HOURS))
    ctx.params.update({"acceleration": accel, "staff": n, "simulated_hours": round(sim_hours, 3),
                       "parts": [p[0] for p in parts], "circulars": circulars,
                       "chat_pairs": pairs, "rates_per_s": {
                           p[0]: float(p[2][p[2].index("--rate") + 1]) for p in parts}})

    parser = build_parser()
    results: dict[str, list[dict[str, Any]]] = {}
    for label in [p[0] for p in parts] + (["circular"] if circulars else []):
        ctx.live_parts[label] = []
    t_start = time.monotonic()

    async def one(label: str, scenario: str, argv: list[str], delay: float = 0.0) -> None:
        if delay:
            await asyncio.sleep(delay)
        sargs = parser.parse_args(["load", scenario, *argv, *common])
        sctx = RunContext.from_args(scenario, sargs)
        sctx.run_id = f"{ctx.run_id}{label[:1]}{len(results.get(label, []))}"
        ctx.live_parts[label].append(sctx.rec)
        try:
            await SCENARIOS[scenario].run(sctx, sargs)
        except OptionError as e:
            ctx.extra.setdefault("skipped", {})[label] = str(e)
        except Exception as e:  # a part that cannot start must not hide the others
            ctx.extra.setdefault("skipped", {})[label] = f"{type(e).__name__}: {e}"
        sctx.rec.finish()
        results.setdefault(label, []).append(build_result(sctx))
        ctx.rec.merge(sctx.rec)

    tasks = [one(*p) for p in parts]
    for i in range(circulars):
        tasks.append(one("circular", "smtp-circular", [
            "--target", f"{host}:{args.smtp_port}", "--count", "1", "--max-rcpts", "1000",
            "--connections", "3", "--from", f"mayor@{domain}"],
            delay=duration * (i + 0.5) / circulars))
    await asyncio.gather(*tasks)
    ctx.rec.finish()
    ctx.completed = all(r.get("completed", True) for rs in results.values() for r in rs)
    ctx.extra["protocols"] = {}
    for label in ctx.live_parts:  # in the order of the parts, not of their ending
        if not (rs := results.get(label)):
            continue
        s = _summary(rs[0])
        merged = Recorder(t0=ctx.rec.t0)  # the label's parts on the run's clock
        for part_rec in ctx.live_parts[label]:
            merged.merge(part_rec)
        if len(rs) > 1:  # several circulars: add up counts and histograms
            for r in rs[1:]:
                o = _summary(r)
                for k in ("sent", "delivered", "failed", "lost"):
                    s[k] += o[k]
            s["latency_ms"] = {k: v for k, v in summarize(merged.hist("latency")).items()
                               if k in s["latency_ms"]}
        s["timeseries"] = merged.timeseries()
        s["curves"] = {"latency_ms": percentile_curve(merged.hist("latency"))}
        if "e2e" in merged.hists:
            s["curves"]["e2e_latency_ms"] = percentile_curve(merged.hists["e2e"])
        ctx.extra["protocols"][label] = s
    ctx.extra["wall_s"] = round(time.monotonic() - t_start, 3)


SCENARIO = Scenario(name="workday", help="the whole city's day at an acceleration, all protocols",
                    default_port=25, add_arguments=add_arguments, run=run)
