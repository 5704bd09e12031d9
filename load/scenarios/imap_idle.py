"""imap-idle: N clients sit in IDLE; a sender delivers mail to them by SMTP; push latency.

Each of `--connections` accounts (the first N of --credentials) logs in, SELECTs INBOX and
enters IDLE (RFC 2177) before the clock starts. Worker i then sends one message at a time
over SMTP (`--smtp HOST:PORT`, connection reused) to account i and waits for its IDLE
connection to report the new message with an untagged `* n EXISTS` (RFC 3501 §7.3.1).

- latency_ms: push latency, the 250 reply -> the untagged EXISTS;
- e2e_latency_ms: first byte of the SMTP transaction -> the EXISTS;
- smtp_ms: first byte -> 250.

Accounting per message: delivered = pushed; failed = refused over SMTP (or never handed
over); lost = accepted but no EXISTS within --verify-timeout, or fate unknown after the
final dot. One message per mailbox is in flight at a time, so each EXISTS is unambiguous;
after a missed push the worker takes the mailbox's current count as the new baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import time

from load.context import RunContext
from load.imapclient import ImapClient
from load.message import MessageFactory
from load.options import (
    Credential,
    OptionError,
    add_common_arguments,
    check_target_allowed,
    parse_target,
)
from load.runner import Ticket, drive
from load.scenarios.base import Scenario
from load.smtpclient import LoadError, SmtpClient, classify, reply_class

_EXISTS = re.compile(rb"^\* (\d+) EXISTS", re.I)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, default_port=143, tls_port=993)
    g = p.add_argument_group("IDLE and the sender")
    g.add_argument("--smtp", required=True, metavar="HOST[:PORT]",
                   help="SMTP server that delivers into the IDLE mailboxes (plain, port 25)")
    g.add_argument("--from", dest="mail_from", default="load@load.invalid",
                   help="envelope sender (default load@load.invalid)")
    g.add_argument("--verify-timeout", type=float, default=10.0, metavar="S",
                   help="a message not pushed S seconds after its 250 is lost (default 10)")
    g.add_argument("--server-name", default=None, help="TLS server name")
    p.set_defaults(size="1k")


class IdleWatcher:
    """One logged-in connection in IDLE, tracking the mailbox's EXISTS count."""

    def __init__(self, client: ImapClient, exists: int) -> None:
        self.c = client
        self.exists = exists
        self.changed = asyncio.Event()
        self.closed = False
        self.tag = b""
        self.task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, ctx: RunContext, args: argparse.Namespace, cred: Credential) -> IdleWatcher:
        t = time.monotonic()
        c = await ImapClient.connect(ctx.target, io_timeout=ctx.timeout, ssl_ctx=ctx.ssl_ctx,
                                     implicit_tls=ctx.implicit_tls, starttls=ctx.starttls,
                                     server_hostname=args.server_name)
        try:
            async with asyncio.timeout(ctx.timeout):
                await c.login(cred.address, cred.password)
                info = await c.select("INBOX")
                w = cls(c, info.get("EXISTS", 0))
                w.tag = c._next_tag()
                c.writer.write(w.tag + b" IDLE\r\n")
                line = await c.read_line()
                while line.startswith(b"* "):  # untagged data before the continuation
                    w._untagged(line)
                    line = await c.read_line()
                if not line.startswith(b"+"):
                    raise LoadError(f"IDLE refused: {line[:60]!r}", "protocol")
        except BaseException:
            c.abort()
            raise
        ctx.rec.connections_opened += 1
        ctx.rec.record_latency("login", time.monotonic() - t)
        w.task = asyncio.ensure_future(w._read())
        return w

    def _untagged(self, line: bytes) -> None:
        if m := _EXISTS.match(line):
            self.exists = int(m.group(1))
            self.changed.set()
        elif line.startswith(b"* BYE"):
            self.closed = True
            self.changed.set()

    async def _read(self) -> None:
        try:
            while True:
                line = await self.c.read_line()
                if line.startswith(self.tag + b" "):
                    break
                self._untagged(line)
        except Exception:
            pass
        self.closed = True
        self.changed.set()

    async def wait_above(self, n: int, timeout: float) -> float | None:
        """Monotonic time at which EXISTS went above `n`, or None on timeout/close."""
        deadline = time.monotonic() + timeout
        while self.exists <= n:
            if self.closed:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        return time.monotonic()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.c.writer.write(b"DONE\r\n")
            if self.task is not None:
                await asyncio.wait({self.task}, timeout=2.0)
        if self.task is not None:
            self.task.cancel()
        await self.c.logout()


class IdleWorker:
    def __init__(self, ctx: RunContext, args: argparse.Namespace, watcher: IdleWatcher,
                 cred: Credential, factory: MessageFactory) -> None:
        self.ctx, self.args, self.w, self.cred, self.factory = ctx, args, watcher, cred, factory
        self.smtp_target = parse_target(args.smtp, 25)
        self.client: SmtpClient | None = None

    async def handle(self, ticket: Ticket) -> None:
        ctx, rec = self.ctx, self.ctx.rec
        lid, data = self.factory.build(ticket.seq, self.args.mail_from, [self.cred.address],
                                       ctx.sizes.pick(ctx.rng), subject="idle push")
        rec.started(1, len(data))
        base = self.w.exists
        client = self.client
        try:
            if client is None:
                client = self.client = await SmtpClient.connect(self.smtp_target,
                                                                io_timeout=ctx.timeout)
            t0 = time.monotonic()
            async with asyncio.timeout(ctx.timeout):
                res = await client.send(self.args.mail_from, [self.cred.address], data)
        except BaseException as e:
            cls = "aborted" if isinstance(e, asyncio.CancelledError) else classify(e)
            (rec.lose if client is not None and client.data_sent else rec.fail)(cls, 1)
            if client is not None:
                client.abort()
            self.client = None
            if not isinstance(e, Exception):
                raise
            return
        t250 = time.monotonic()
        if not res.ok:
            rec.fail(reply_class(res.final_code or (res.rejected[0][1] if res.rejected else 0)))
            return
        rec.record_latency("smtp", t250 - t0)
        try:
            at = await self.w.wait_above(base, float(self.args.verify_timeout))
        except asyncio.CancelledError:
            rec.lose("aborted")
            raise
        if at is None:
            rec.lose("idle-closed" if self.w.closed else "not-pushed")
            return
        rec.accept(1, at - t250, at)
        rec.record_latency("e2e", at - t0)

    async def close(self) -> None:
        if self.client is not None:
            c, self.client = self.client, None
            await c.quit()


async def run(ctx: RunContext, args: argparse.Namespace) -> None:
    n = ctx.limits.connections
    if len(ctx.credentials) < n:
        raise OptionError(f"imap-idle needs {n} accounts in --credentials (one per IDLE client)")
    check_target_allowed(parse_target(args.smtp, 25), args.allow_remote)
    ctx.params.update({"smtp": args.smtp, "idle_clients": n})
    creds = ctx.credentials[:n]
    sem = asyncio.Semaphore(50)

    async def open_one(c: Credential) -> IdleWatcher:
        async with sem:
            return await IdleWatcher.open(ctx, args, c)

    got = await asyncio.gather(*(open_one(c) for c in creds), return_exceptions=True)
    watchers = [w for w in got if isinstance(w, IdleWatcher)]
    try:
        errors = [classify(e) for e in got if isinstance(e, BaseException)]
        if errors:
            raise OptionError(f"could not start IDLE for {len(errors)} accounts: "
                              f"{sorted(set(errors))}")
        ctx.rec.t0, ctx.rec.started_wall = time.monotonic(), time.time()
        factory = MessageFactory(ctx.run_id)
        ctx.completed = await drive(
            ctx.limits, lambda i: IdleWorker(ctx, args, watchers[i], creds[i], factory), ctx.rec)
        ctx.rec.finish()
    finally:
        await asyncio.gather(*(w.close() for w in watchers), return_exceptions=True)


SCENARIO = Scenario(name="imap-idle", help="IMAP IDLE push latency under SMTP delivery",
                    default_port=143, tls_port=993, add_arguments=add_arguments, run=run,
                    defaults={"count": 50})
