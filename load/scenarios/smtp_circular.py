"""smtp-circular: one message to every recipient at once; measures how fast it reaches all.

Recipients come from `--rcpt`, the credentials file, or `--docs UNITS_FILE` (every
`<unit>.docs@<domain>`). `--max-rcpts` splits the recipient list into several
transactions of the same message (same X-Load-Id), spread over `--connections` in
parallel, since servers cap recipients per transaction (RFC 5321 §4.5.3.1.8: at least 100).
`--count` is the number of circulars (default 1), sent one after another.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace

from load.context import RunContext
from load.options import OptionError, add_common_arguments, load_units
from load.scenarios.base import Scenario
from load.scenarios.smtp_common import (
    Job,
    add_smtp_arguments,
    recipients_from,
    run_smtp,
    sender_for,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, default_port=25, tls_port=465)
    add_smtp_arguments(p)
    p.add_argument("--docs", default=None, metavar="UNITS_FILE",
                   help="send to <unit>.docs@DOMAIN for every unit in the file "
                        "(CSV with a `code` column, or one code per line)")
    p.add_argument("--domain", default=None, help="domain for --docs addresses")
    p.add_argument("--max-rcpts", type=int, default=1000, metavar="K",
                   help="recipients per transaction (default 1000)")
    p.set_defaults(count=None, connections=None)


async def run(ctx: RunContext, args: argparse.Namespace) -> None:
    if args.docs:
        rcpts = load_units(args.docs, args.domain)
    else:
        rcpts = recipients_from(ctx, args)
    k = int(args.max_rcpts)
    if k < 1:
        raise OptionError("--max-rcpts must be at least 1")
    chunks = [rcpts[i:i + k] for i in range(0, len(rcpts), k)]
    circulars = args.count if args.count is not None else 1
    if args.duration is not None and args.count is None:
        circulars = None  # as many as fit in the duration
    # one ticket per transaction: circular c, chunk j  ->  seq = c * len(chunks) + j
    conns = args.connections if args.connections is not None else min(len(chunks), 10)
    ctx.limits = replace(ctx.limits, connections=max(conns, 1),
                         count=None if circulars is None else circulars * len(chunks))
    ctx.params.update({"recipients": len(rcpts), "transactions_per_circular": len(chunks),
                       "max_rcpts": k, "count": circulars, "connections": ctx.limits.connections,
                       "docs": bool(args.docs)})
    sender = sender_for(ctx, args, 0)
    sizes, rng = ctx.sizes, ctx.rng
    size_of: dict[int, int] = {}

    def plan(seq: int) -> Job:
        c, j = divmod(seq, len(chunks))
        if c not in size_of:
            size_of[c] = sizes.pick(rng)
        return Job(c, sender, chunks[j], size_of[c])

    await run_smtp(ctx, args, plan, rcpts if args.verify_imap else [])
    rec = ctx.rec
    lat = rec.hists.get("e2e") or rec.hists.get("latency")
    if lat is not None and lat.get_total_count() and math.isfinite(lat.get_max_value()):
        ctx.extra["reach_everyone_ms"] = lat.get_max_value() / 1000.0
        ctx.extra["reach_everyone_basis"] = "e2e" if "e2e" in rec.hists else "smtp-250"


SCENARIO = Scenario(name="smtp-circular", help="one message to all recipients at once",
                    default_port=25, tls_port=465, add_arguments=add_arguments, run=run)
