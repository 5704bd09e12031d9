"""smtp-burst: N concurrent sessions send M messages, one recipient (or K) each.

Recipients rotate through `--rcpt` addresses or the credentials file; each message gets
its own X-Load-Id. One message per connection by default (connect, EHLO, send, QUIT), or
many per connection with `--reuse`.
"""

from __future__ import annotations

import argparse

from load.context import RunContext
from load.options import OptionError, add_common_arguments
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
    p.add_argument("--rcpts-per-message", type=int, default=1, metavar="K",
                   help="recipients per message, taken in turn (default 1)")


async def run(ctx: RunContext, args: argparse.Namespace) -> None:
    rcpts = recipients_from(ctx, args)
    k = int(args.rcpts_per_message)
    if not 1 <= k <= len(rcpts):
        raise OptionError(f"--rcpts-per-message must be 1..{len(rcpts)}")
    senders = [sender_for(ctx, args, i) for i in range(max(len(ctx.credentials), 1))]
    sizes, rng = ctx.sizes, ctx.rng
    ctx.params.update({"recipients": len(rcpts), "rcpts_per_message": k})

    def plan(seq: int) -> Job:
        start = (seq * k) % len(rcpts)
        chosen = [rcpts[(start + j) % len(rcpts)] for j in range(k)]
        sender = args.mail_from or senders[seq % len(senders)]
        # --auth: log in as the message's sender (a submission server refuses MAIL FROM
        # of another account); a worker keeps its connection while the sender repeats.
        pw = ctx.password_for(sender) if args.auth else None
        return Job(seq, sender, chosen, sizes.pick(rng), auth=(sender, pw) if pw else None)

    mailboxes = sorted(set(rcpts)) if args.verify_imap else []
    await run_smtp(ctx, args, plan, mailboxes)


SCENARIO = Scenario(name="smtp-burst", help="N concurrent SMTP sessions send M messages",
                    default_port=25, tls_port=465, add_arguments=add_arguments, run=run)
