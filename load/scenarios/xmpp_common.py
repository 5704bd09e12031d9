"""What the XMPP scenarios share: options, logging in a client, the message ledger.

TLS: STARTTLS by default (RFC 6120 §5), `--tls` for direct TLS (XEP-0368, port 5223),
`--no-starttls` for a plain stream (servers usually refuse PLAIN then). Accounts come from
`--credentials` (the demo password file works as is); the XMPP domain is `--domain` or the
domain of the first account.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from load.context import RunContext
from load.options import (
    Credential,
    OptionError,
    Target,
    check_target_allowed,
    client_ssl_context,
    parse_target,
)
from load.stats import Recorder
from load.xmppclient import MECHANISMS, XmppClient


def add_xmpp_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("XMPP")
    g.add_argument("--domain", default=None,
                   help="XMPP domain (default: the domain of the first account)")
    g.add_argument("--mechanism", choices=MECHANISMS, default=None,
                   help="SASL mechanism (default: the best offered, SCRAM-SHA-256 first)")
    g.add_argument("--no-starttls", action="store_true", help="plain stream, no STARTTLS")
    g.add_argument("--server-name", default=None, help="TLS server name (default: the domain)")
    g.add_argument("--resource", default="load", help="resource to bind (default load)")
    g.add_argument("--presence", action=argparse.BooleanOptionalAction, default=True,
                   help="send initial presence after login (default on)")
    g.add_argument("--second-target", default=None, metavar="HOST[:PORT]",
                   help="a second node of the same service: every other client logs in "
                        "there (half the clients each; chat pairs then cross nodes)")


def second_target(ctx: RunContext, args: argparse.Namespace) -> Target | None:
    """The `--second-target` node, under the same loopback rule as `--target`."""
    text = getattr(args, "second_target", None)
    if not text:
        return None
    target = parse_target(text, ctx.target.port)
    check_target_allowed(target, args.allow_remote)
    return target


def note_tls(ctx: RunContext, args: argparse.Namespace) -> None:
    """XMPP uses STARTTLS unless told otherwise: say so in the params."""
    ctx.params["tls"] = ("direct" if ctx.implicit_tls else
                         "none" if args.no_starttls else "starttls")


def xmpp_domain(ctx: RunContext, args: argparse.Namespace) -> str:
    if args.domain:
        return str(args.domain)
    if ctx.credentials:
        return ctx.credentials[0].address.rpartition("@")[2]
    raise OptionError("pass --domain or --credentials")


async def login(ctx: RunContext, args: argparse.Namespace, cred: Credential,
                resource: str | None = None, target: Target | None = None) -> XmppClient:
    """Connect and log in one account; records `connect` (to bound) and `login` times."""
    ssl_ctx = ctx.ssl_ctx or client_ssl_context(args.insecure, args.cafile)
    t = time.monotonic()
    c = await XmppClient.connect(
        target or ctx.target, xmpp_domain(ctx, args), cred.address, cred.password,
        io_timeout=ctx.timeout, ssl_ctx=ssl_ctx, direct_tls=ctx.implicit_tls,
        starttls=not args.no_starttls, mechanism=args.mechanism,
        resource=resource or args.resource, server_hostname=args.server_name)
    ctx.rec.connections_opened += 1
    ctx.rec.record_latency("login", time.monotonic() - t)
    if args.presence:
        c.presence()
    return c


@dataclass
class Ledger:
    """Every message id the harness sent, until it is received, bounced, or given up.

    Each id is settled exactly once, so `sent == delivered + failed + lost` holds whatever
    arrives late or twice (late and duplicate arrivals are only counted in `late`, `dups`).
    """

    rec: Recorder
    pending: dict[str, tuple[float, int]] = field(default_factory=dict)  # id -> (t0, slot)
    settled: set[str] = field(default_factory=set)
    late_or_dup: int = 0
    unknown: int = 0
    per_slot: dict[int, int] = field(default_factory=dict)
    on_settle: dict[int, asyncio.Event] = field(default_factory=dict)
    all_settled: asyncio.Event = field(default_factory=asyncio.Event)

    def sent(self, mid: str, slot: int, nbytes: int) -> float:
        self.rec.started(1, nbytes)
        t0 = time.monotonic()
        self.pending[mid] = (t0, slot)
        self.per_slot[slot] = self.per_slot.get(slot, 0) + 1
        self.all_settled.clear()
        return t0

    def _done(self, mid: str) -> tuple[float, int] | None:
        got = self.pending.pop(mid, None)
        if got is None:
            if mid in self.settled:
                self.late_or_dup += 1
            else:
                self.unknown += 1
            return None
        self.settled.add(mid)
        self.per_slot[got[1]] -= 1
        if not self.pending:
            self.all_settled.set()
        ev = self.on_settle.get(got[1])
        if ev is not None:
            ev.set()
        return got

    def received(self, mid: str) -> None:
        now = time.monotonic()
        got = self._done(mid)
        if got is not None:
            self.rec.accept(1, now - got[0], now)

    def failed(self, mid: str, cls: str) -> None:
        if self._done(mid) is not None:
            self.rec.fail(cls, 1)

    def lost(self, mid: str, cls: str) -> None:
        if self._done(mid) is not None:
            self.rec.lose(cls, 1)

    def in_flight(self, slot: int) -> int:
        return self.per_slot.get(slot, 0)

    def oldest(self, slot: int) -> str | None:
        return next((m for m, (_t, s) in self.pending.items() if s == slot), None)

    async def drain(self, wait_s: float) -> None:
        """Wait up to `wait_s` for everything in flight, then count the rest as lost."""
        if self.pending and wait_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_settled.wait(), wait_s)
        for mid in list(self.pending):
            self.lost(mid, "not-received")
