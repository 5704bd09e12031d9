"""xmpp-chat: N pairs of logged-in clients exchange messages; throughput and latency.

Accounts from `--credentials` are paired in file order (1st with 2nd, 3rd with 4th, ...);
`--connections N` is the number of pairs (2N streams, all logged in before the clock
starts; their login times are in `login_ms`). Each pair sends alternately A->B and B->A,
with up to `--window` messages in flight per pair (closed loop) or at `--rate` overall
(open loop). Messages go to the peer's full JID (or bare JID with `--to bare`, which needs
presence) with a unique id.

Latency is first byte sent -> the peer's client has parsed the whole `<message>`.
Accounting, per message id, exactly once: delivered (the peer received it), failed (the
server bounced it with a stanza error, class `xmpp-<condition>`, or the sender's stream
was down), lost (not received within `--verify-timeout` after the last send, or the run
was cut).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import xml.etree.ElementTree as ET

from load.context import RunContext
from load.options import OptionError, add_common_arguments
from load.runner import Ticket, drive
from load.scenarios.base import Scenario
from load.scenarios.xmpp_common import (
    Ledger,
    add_xmpp_arguments,
    login,
    note_tls,
    second_target,
)
from load.smtpclient import classify
from load.xmppclient import XmppClient, stanza_error

_MSG = "{jabber:client}message"
_BODY = "{jabber:client}body"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, default_port=5222, tls_port=5223)
    add_xmpp_arguments(p)
    g = p.add_argument_group("chat")
    g.add_argument("--window", type=int, default=1, metavar="K",
                   help="messages in flight per pair (default 1)")
    g.add_argument("--to", choices=["full", "bare"], default="full",
                   help="address the peer by full JID (default) or bare JID")
    g.add_argument("--verify-timeout", type=float, default=10.0, metavar="S",
                   help="a message not received S seconds after it was sent is lost "
                        "(default 10)")


def on_stanza_for(ledger: Ledger) -> object:
    def on_stanza(el: ET.Element) -> None:
        if el.tag != _MSG:
            return
        mid = el.get("id")
        if not mid:
            return
        if el.get("type") == "error":
            ledger.failed(mid, stanza_error(el))
        elif el.find(_BODY) is not None:
            ledger.received(mid)
    return on_stanza


class Pair:
    """Two logged-in clients that talk to each other; one runner worker."""

    def __init__(self, ctx: RunContext, args: argparse.Namespace, index: int,
                 clients: tuple[XmppClient, XmppClient], ledger: Ledger) -> None:
        self.ctx, self.index, self.clients, self.ledger = ctx, index, clients, ledger
        self.window = int(args.window)
        self.bare = args.to == "bare"
        self.settled = ledger.on_settle.setdefault(index, asyncio.Event())
        self.patience = float(args.verify_timeout)
        self.n = 0

    async def _slot(self) -> None:
        """Wait until fewer than `window` messages of this pair are in flight."""
        led = self.ledger
        while led.in_flight(self.index) >= self.window:
            self.settled.clear()
            try:
                await asyncio.wait_for(self.settled.wait(), self.patience)
            except TimeoutError:
                mid = led.oldest(self.index)
                if mid is not None:
                    led.lost(mid, "timeout")

    async def handle(self, ticket: Ticket) -> None:
        await self._slot()
        a, b = self.clients if self.n % 2 == 0 else self.clients[::-1]
        self.n += 1
        mid = f"{self.ctx.run_id}-{ticket.seq:08d}"
        body = body_of(self.ctx, ticket.seq)
        self.ledger.sent(mid, self.index, len(body))
        if a.closed.is_set():
            self.ledger.failed(mid, a.close_reason or "disconnect")
            return
        to = b.jid.split("/", 1)[0] if self.bare else b.jid
        try:
            a.message(to, body, mid)
        except Exception as e:
            self.ledger.lost(mid, classify(e))

    async def close(self) -> None:
        return None


_BODIES: dict[int, str] = {}


def body_of(ctx: RunContext, seq: int) -> str:
    size = ctx.sizes.pick(ctx.rng)
    text = _BODIES.get(size)
    if text is None:
        text = _BODIES[size] = ("chat load " * (size // 10 + 1))[:max(size, 1)]
    return text


async def login_all(ctx: RunContext, args: argparse.Namespace, n: int,
                    on_stanza: object) -> list[XmppClient | None]:
    """Log in the first `n` accounts, at most 100 at a time; failures are None."""
    sem = asyncio.Semaphore(100)
    second = second_target(ctx, args)
    if second is not None:
        ctx.params["second_target"] = str(second)

    async def one(i: int) -> XmppClient | None:
        async with sem:
            try:
                c = await login(ctx, args, ctx.credentials[i % len(ctx.credentials)],
                                resource=f"{args.resource}{i}",
                                target=second if second is not None and i % 2 else None)
            except Exception as e:
                ctx.extra.setdefault("login_errors", {})
                errs = ctx.extra["login_errors"]
                errs[classify(e)] = errs.get(classify(e), 0) + 1
                return None
            c.start_reader(on_stanza)  # type: ignore[arg-type]
            return c

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def close_all(clients: list[XmppClient | None]) -> None:
    await asyncio.gather(*(c.close() for c in clients if c is not None),
                         return_exceptions=True)


async def run(ctx: RunContext, args: argparse.Namespace) -> None:
    pairs = ctx.limits.connections
    if len(ctx.credentials) < 2 * pairs:
        raise OptionError(f"xmpp-chat needs {2 * pairs} accounts in --credentials for "
                          f"{pairs} pairs (have {len(ctx.credentials)})")
    if args.window < 1:
        raise OptionError("--window must be at least 1")
    ctx.params.update({"pairs": pairs, "window": args.window, "to": args.to,
                       "mechanism": args.mechanism, "presence": args.presence})
    note_tls(ctx, args)
    ledger = Ledger(ctx.rec)
    clients = await login_all(ctx, args, 2 * pairs, on_stanza_for(ledger))
    try:
        if any(c is None for c in clients):
            raise OptionError(f"could not log in every account: {ctx.extra.get('login_errors')}")
        await asyncio.sleep(0.05 if args.presence else 0)  # let presence settle
        ctx.rec.t0, ctx.rec.started_wall = time.monotonic(), time.time()  # clock starts now
        ok = [c for c in clients if c is not None]
        ctx.completed = await drive(
            ctx.limits, lambda i: Pair(ctx, args, i, (ok[2 * i], ok[2 * i + 1]), ledger),
            ctx.rec)
        await ledger.drain(float(args.verify_timeout) if ctx.completed else 0.0)
        ctx.rec.finish()
        ctx.extra["late_or_duplicate"] = ledger.late_or_dup
    finally:
        with contextlib.suppress(Exception):
            await close_all(clients)


SCENARIO = Scenario(name="xmpp-chat", help="N pairs of XMPP clients exchange messages",
                    default_port=5222, tls_port=5223, add_arguments=add_arguments, run=run,
                    defaults={"size": "100"})
