"""imap-sync: N connections each run mail-client syncs as fast as they can (or at --rate).

One sync is what a desktop client does when it opens a folder: LOGIN (or AUTHENTICATE
PLAIN with --sasl), SELECT INBOX, `UID FETCH 1:* (UID FLAGS RFC822.SIZE)`, fetch the
bodies of the newest `--fetch-bodies` messages, mark the newest \\Seen with `UID STORE`
(unless --read-only), LOGOUT. With `--reuse` a connection logs in once and later syncs
only re-SELECT. One sync counts as one unit in the accounting (sent = delivered + failed
+ lost); its latency is the whole sync; `login_ms` times the login alone.
Accounts come from --credentials, round robin.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from load.context import RunContext
from load.imapclient import ImapClient
from load.options import OptionError, add_common_arguments
from load.runner import Ticket, drive
from load.scenarios.base import Scenario
from load.smtpclient import classify


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, default_port=143, tls_port=993)
    g = p.add_argument_group("IMAP")
    g.add_argument("--reuse", action="store_true", help="log in once per connection")
    g.add_argument("--sasl", action="store_true", help="AUTHENTICATE PLAIN instead of LOGIN")
    g.add_argument("--fetch-bodies", type=int, default=1, metavar="K",
                   help="fetch the K newest bodies per sync (default 1)")
    g.add_argument("--read-only", action="store_true", help="no STORE")
    g.add_argument("--server-name", default=None, help="TLS server name")


class ImapSyncWorker:
    def __init__(self, ctx: RunContext, args: argparse.Namespace, index: int) -> None:
        self.ctx = ctx
        self.args = args
        self.cred = ctx.credentials[index % len(ctx.credentials)]
        self.client: ImapClient | None = None

    async def _login(self) -> ImapClient:
        ctx = self.ctx
        t = time.monotonic()
        c = await ImapClient.connect(ctx.target, io_timeout=ctx.timeout, ssl_ctx=ctx.ssl_ctx,
                                     implicit_tls=ctx.implicit_tls, starttls=ctx.starttls,
                                     server_hostname=self.args.server_name)
        try:
            if self.args.sasl:
                await c.authenticate_plain(self.cred.address, self.cred.password)
            else:
                await c.login(self.cred.address, self.cred.password)
        except BaseException:
            c.abort()
            raise
        ctx.rec.connections_opened += 1
        ctx.rec.record_latency("login", time.monotonic() - t)
        return c

    async def handle(self, ticket: Ticket) -> None:
        rec = self.ctx.rec
        rec.started(1)
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(self.ctx.timeout):
                c = self.client or await self._login()
                self.client = c
                info = await c.select("INBOX")
                uids: list[int] = []
                if info.get("EXISTS", 1):
                    for line in await c.uid_fetch("1:*", "(UID FLAGS RFC822.SIZE)"):
                        head = line.split(b"UID ", 1)
                        if len(head) == 2 and head[1].split()[0].rstrip(b")").isdigit():
                            uids.append(int(head[1].split()[0].rstrip(b")")))
                newest = sorted(uids)[-self.args.fetch_bodies:] if self.args.fetch_bodies else []
                if newest:
                    await c.uid_fetch(",".join(map(str, newest)), "(BODY.PEEK[])")
                    if not self.args.read_only:
                        await c.command(f"UID STORE {newest[-1]} +FLAGS.SILENT (\\Seen)")
                if not self.args.reuse:
                    self.client = None
                    await c.logout()
        except BaseException as e:
            rec.fail("aborted" if isinstance(e, asyncio.CancelledError) else classify(e))
            if self.client is not None:
                self.client.abort()
                self.client = None
            if not isinstance(e, Exception):
                raise
            return
        rec.accept(1, time.monotonic() - t0)

    async def close(self) -> None:
        if self.client is not None:
            c, self.client = self.client, None
            await c.logout()


async def run(ctx: RunContext, args: argparse.Namespace) -> None:
    if not ctx.credentials:
        raise OptionError("imap-sync needs --credentials FILE (address,password)")
    ctx.params.update({"reuse": bool(args.reuse), "sasl": bool(args.sasl),
                       "fetch_bodies": args.fetch_bodies, "read_only": bool(args.read_only),
                       "accounts": len(ctx.credentials)})
    ctx.completed = await drive(ctx.limits, lambda i: ImapSyncWorker(ctx, args, i), ctx.rec)
    ctx.rec.finish()


SCENARIO = Scenario(name="imap-sync", help="IMAP clients open INBOX and sync it",
                    default_port=143, tls_port=993, add_arguments=add_arguments, run=run)
