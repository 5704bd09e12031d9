"""What the SMTP scenarios share: their options, the per-connection worker, verification.

A scenario describes *what* to send with a plan: `plan(seq) -> Job` (sender, recipients,
size, which X-Load-Id). The worker does the sending and the accounting; the optional IMAP
verifier turns 250 replies into end-to-end arrivals.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from load.context import RunContext
from load.imapverify import ImapVerifier
from load.message import LOAD_ID_HEADER, MessageFactory
from load.options import OptionError, check_target_allowed, client_ssl_context, parse_target
from load.runner import Ticket, drive
from load.smtpclient import SmtpClient, classify, reply_class


@dataclass(frozen=True)
class Job:
    """One transaction: `msg_seq` names the message (its X-Load-Id), `rcpts` its recipients.

    Optional: `payload` (a ready DATA payload instead of a generated message), `auth`
    (log in as this account for this job), `deliveries` and `watch` (count this many
    deliveries and verify these mailboxes instead of the recipients: a document sent to
    its own unit's inbox fans out to the receiving units' clerks), `subject`.
    """

    msg_seq: int
    mail_from: str
    rcpts: list[str]
    size: int
    payload: bytes | None = None
    auth: tuple[str, str] | None = None
    deliveries: int | None = None
    watch: list[str] | None = None
    subject: str = "load test"


def add_smtp_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SMTP")
    g.add_argument("--from", dest="mail_from", default=None, metavar="ADDRESS",
                   help="envelope sender (default: the first credentials address, or "
                        "load@load.invalid)")
    g.add_argument("--rcpt", action="append", default=[], metavar="ADDRESS",
                   help="recipient (repeatable); default: addresses from --credentials")
    g.add_argument("--auth", action="store_true",
                   help="submission: AUTH PLAIN as the sender, password from --credentials")
    g.add_argument("--reuse", action="store_true",
                   help="keep each connection for many messages (default: one per connection)")
    g.add_argument("--pipelining", choices=["auto", "on", "off"], default="auto",
                   help="RFC 2920 pipelining: when advertised (auto), always, never")
    g.add_argument("--helo", default="load.invalid", help="EHLO name")
    g.add_argument("--server-name", default=None, help="TLS server name (SNI, verification)")
    g = p.add_argument_group("end-to-end verification")
    g.add_argument("--verify-imap", default=None, metavar="HOST[:PORT]",
                   help="watch recipients' INBOX over IMAP (passwords from --credentials) "
                        "and measure first byte sent -> seen in the mailbox")
    g.add_argument("--verify-imap-tls", action="store_true", help="implicit TLS for IMAP (993)")
    g.add_argument("--verify-timeout", type=float, default=30.0, metavar="S",
                   help="how long after the last 250 to wait for arrivals (default 30)")
    g.add_argument("--verify-poll", type=float, default=0.05, metavar="S",
                   help="IMAP poll interval; the e2e resolution (default 0.05)")


def recipients_from(ctx: RunContext, args: argparse.Namespace) -> list[str]:
    if args.rcpt:
        return [r.strip() for r in args.rcpt]
    if ctx.credentials:
        return [c.address for c in ctx.credentials]
    raise OptionError("no recipients: pass --rcpt ADDRESS or --credentials FILE")


def sender_for(ctx: RunContext, args: argparse.Namespace, worker: int) -> str:
    if args.mail_from:
        return str(args.mail_from)
    if ctx.credentials:
        return ctx.credentials[worker % len(ctx.credentials)].address
    return "load@load.invalid"


class SmtpWorker:
    """One connection slot: connects (again) as needed, sends jobs, records outcomes."""

    def __init__(self, ctx: RunContext, args: argparse.Namespace, index: int,
                 plan: Callable[[int], Job], factory: MessageFactory,
                 verifier: ImapVerifier | None) -> None:
        self.ctx = ctx
        self.index = index
        self.plan = plan
        self.factory = factory
        self.verifier = verifier
        self.reuse = bool(args.reuse)
        self.helo = str(args.helo)
        self.server_name = args.server_name
        self.pipelining = {"auto": None, "on": True, "off": False}[args.pipelining]
        self.auth: tuple[str, str] | None = None
        if args.auth:
            user = sender_for(ctx, args, index)
            pw = ctx.password_for(user)
            if pw is None:
                raise OptionError(f"--auth: no password for {user} in --credentials")
            self.auth = (user, pw)
        self.client: SmtpClient | None = None
        self.client_auth: tuple[str, str] | None = None

    async def _connect(self, auth: tuple[str, str] | None) -> SmtpClient:
        ctx = self.ctx
        t = time.monotonic()
        client = await SmtpClient.connect(
            ctx.target, io_timeout=ctx.timeout, helo=self.helo, ssl_ctx=ctx.ssl_ctx,
            implicit_tls=ctx.implicit_tls, starttls=ctx.starttls,
            server_hostname=self.server_name, auth=auth)
        self.client_auth = auth
        ctx.rec.connections_opened += 1
        ctx.rec.record_latency("connect", time.monotonic() - t)
        return client

    async def handle(self, ticket: Ticket) -> None:
        ctx, rec = self.ctx, self.ctx.rec
        job = self.plan(ticket.seq)
        lid, data = self.factory.build(job.msg_seq, job.mail_from, job.rcpts, job.size,
                                       job.subject)
        if job.payload is not None:
            data = job.payload
        n = len(job.rcpts) if job.deliveries is None else job.deliveries
        rec.started(n, len(data))
        auth = job.auth or self.auth
        client = self.client
        if client is not None and auth != self.client_auth:
            self.client = None
            await client.quit()
            client = None
        try:
            if client is None:
                client = self.client = await self._connect(auth)
            t0 = time.monotonic()
            async with asyncio.timeout(ctx.timeout):
                res = await client.send(job.mail_from, job.rcpts, data, self.pipelining)
        except BaseException as e:
            cls = "aborted" if isinstance(e, asyncio.CancelledError) else classify(e)
            if client is not None and client.data_sent:
                rec.lose(cls, n)
            else:
                rec.fail(cls, n, detail=str(e))
            if client is not None:
                client.abort()
            self.client = None
            if not isinstance(e, Exception):
                raise
            return
        now = time.monotonic()
        if job.deliveries is not None:  # all or nothing: the deliveries hang on one message
            if not res.ok:
                code = res.final_code if res.final_code >= 400 else (
                    res.rejected[0][1] if res.rejected else 554)
                rec.fail(reply_class(code), n, now, detail=res.final_text)
            else:
                watch = job.watch or []
                pending = self.verifier.expect(lid, watch, t0) if self.verifier else 0
                rec.accept(n, now - t0, now, pending=pending)
        else:
            for rcpt, code in res.rejected:
                rec.fail(reply_class(code), 1, now, detail=f"RCPT {rcpt}: {code}")
            if res.ok:
                pending = self.verifier.expect(lid, res.accepted, t0) if self.verifier else 0
                rec.accept(len(res.accepted), now - t0, now, pending=pending)
            elif res.accepted:
                rec.fail(reply_class(res.final_code), len(res.accepted), now,
                         detail=f"{res.final_code} {res.final_text}")
        if not self.reuse:
            self.client = None
            await client.quit()

    async def close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            await client.quit()


async def run_smtp(ctx: RunContext, args: argparse.Namespace, plan: Callable[[int], Job],
                   mailboxes: list[str], verify_header: str = LOAD_ID_HEADER) -> None:
    """Drive SMTP load with `plan`, then (optionally) wait for the mailboxes to see it all."""
    ctx.params.update({"reuse": bool(args.reuse), "auth": bool(args.auth),
                       "pipelining": args.pipelining, "from": args.mail_from})
    verifier = None
    if args.verify_imap:
        vt = parse_target(args.verify_imap, 993 if args.verify_imap_tls else 143)
        check_target_allowed(vt, args.allow_remote)
        verifier = ImapVerifier(vt, ctx.run_id, ctx.password_for, tls=args.verify_imap_tls,
                                ssl_ctx=ctx.ssl_ctx or client_ssl_context(args.insecure, args.cafile),
                                timeout=ctx.timeout,
                                poll=float(args.verify_poll), header=verify_header)
        ctx.params["verify_imap"] = str(vt)
        await verifier.start(mailboxes)
    factory = MessageFactory(ctx.run_id)
    workers: list[SmtpWorker] = []

    def make(i: int) -> SmtpWorker:
        w = SmtpWorker(ctx, args, i, plan, factory, verifier)
        workers.append(w)
        return w

    try:
        ctx.completed = await drive(ctx.limits, make, ctx.rec)
        ctx.rec.finish()
        if verifier is not None:
            await verifier.finish(ctx.rec, float(args.verify_timeout))
            ctx.extra["verification"] = verifier.summary()
    finally:
        if verifier is not None:
            await verifier.close()
