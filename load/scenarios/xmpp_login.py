"""xmpp-login: a login storm. Each unit of work is one full login of one account:

TCP connect, STARTTLS (or direct TLS with --tls), SASL (SCRAM-SHA-256 by default, or
--mechanism PLAIN / SCRAM-SHA-1), resource binding, optional initial presence; then the
stream is closed (or, with `--hold`, kept open until the run ends, so N concurrent
sessions pile up). Accounts rotate through --credentials; `--connections` logins run at
once (closed loop) or `--rate` start per second (open loop).

Accounting: sent = logins attempted; delivered = bound; failed = refused or broken, by
class (`connect`, `tls`, `xmpp-auth`, `xmpp-bind`, `xmpp-stream`, `timeout`, ...).
Latency is connect -> bound JID received.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from load.context import RunContext
from load.options import OptionError, add_common_arguments
from load.runner import Ticket, drive
from load.scenarios.base import Scenario
from load.scenarios.xmpp_common import add_xmpp_arguments, login, note_tls
from load.smtpclient import classify
from load.xmppclient import XmppClient


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, default_port=5222, tls_port=5223)
    add_xmpp_arguments(p)
    p.add_argument("--hold", action="store_true",
                   help="keep every session open until the end of the run")
    p.set_defaults(presence=False)


class LoginWorker:
    def __init__(self, ctx: RunContext, args: argparse.Namespace, held: list[XmppClient]) -> None:
        self.ctx, self.args, self.held = ctx, args, held

    async def handle(self, ticket: Ticket) -> None:
        ctx = self.ctx
        cred = ctx.credentials[ticket.seq % len(ctx.credentials)]
        ctx.rec.started(1)
        t0 = time.monotonic()
        try:
            c = await login(ctx, self.args, cred, resource=f"{self.args.resource}{ticket.seq}")
        except BaseException as e:
            ctx.rec.fail("aborted" if isinstance(e, asyncio.CancelledError) else classify(e))
            if not isinstance(e, Exception):
                raise
            return
        ctx.rec.accept(1, time.monotonic() - t0)
        if self.args.hold:
            self.held.append(c)
        else:
            await c.close()

    async def close(self) -> None:
        return None


async def run(ctx: RunContext, args: argparse.Namespace) -> None:
    if not ctx.credentials:
        raise OptionError("xmpp-login needs --credentials FILE (address,password)")
    ctx.params.update({"mechanism": args.mechanism, "hold": bool(args.hold),
                       "presence": args.presence, "accounts": len(ctx.credentials),
                       "starttls": not args.no_starttls})
    note_tls(ctx, args)
    held: list[XmppClient] = []
    try:
        ctx.completed = await drive(ctx.limits, lambda i: LoginWorker(ctx, args, held), ctx.rec)
        ctx.rec.finish()
        ctx.extra["held_sessions"] = len(held)
    finally:
        await asyncio.gather(*(c.close() for c in held), return_exceptions=True)


SCENARIO = Scenario(name="xmpp-login", help="login storm: TLS + SASL + bind",
                    default_port=5222, tls_port=5223, add_arguments=add_arguments, run=run,
                    defaults={"count": 100})
