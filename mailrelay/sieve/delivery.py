"""The Sieve stage of local delivery: run each recipient's active script and carry out its
actions (RFC 5228 §2.10 and §4, RFC 5232, RFC 5230, RFC 5429, RFC 3894).

The scheduler hands over the local queue rows whose recipient has an active script (the
submission stage queues those instead of delivering them inline). Mailbox actions go
through the one store-and-deliver function (`queue.repo.deliver_local`) in the same
transaction that finishes the queue rows; generated mail (redirects, vacation replies,
rejection notices) is prepared by the one submission stage first (a refusal such as an
unknown redirect target is known before anything is written) and queued inside that same
transaction (`Submitter.submit_in`), with the vacation history: a crash or a lost lease
neither loses it nor sends it twice. Never loses mail: a script that fails keeps the
message in INBOX.
"""

from __future__ import annotations

import dataclasses
import email.utils
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from cxkernel.errors import CxError
from mailrelay.queue import repo as qrepo
from mailrelay.queue.repo import QueueRow
from mailrelay.queue.scheduler import Outcome
from mailrelay.srs import SRS
from mailrelay.submit import ClientInfo, Submission, Submitter

from . import interp, notices, repo, vacation
from .script import Script, compile_script

log = logging.getLogger("cxgw.sieve")

_FLAG_OK = frozenset("\\$!#&'*+-.^_`|~") | frozenset("abcdefghijklmnopqrstuvwxyz"
                                                     "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def clean_flags(flags: Sequence[str]) -> tuple[str, ...]:
    """Flags that are valid IMAP flags (RFC 3501 §2.3.2: atoms, system flags with one
    backslash); \\Recent is the server's alone (RFC 5232 §3)."""
    out: list[str] = []
    for f in flags:
        if not f or len(f) > 64 or any(c not in _FLAG_OK for c in f) or "\\" in f[1:]:
            continue
        if f.lower() == "\\recent":
            continue
        if f.lower() not in {x.lower() for x in out}:
            out.append(f)
    return tuple(out)


def mailbox_name(name: str) -> str:
    """RFC 3501 §5.1: INBOX is case-insensitive; other names are taken as written."""
    return "INBOX" if name.upper() == "INBOX" else name


@dataclasses.dataclass
class _Plan:
    row: QueueRow
    boxes: list[tuple[str | None, tuple[str, ...]]]  # (mailbox or None for INBOX, flags)
    notes: list[str]
    failed: Outcome | None = None
    # Generated mail, prepared (refusals raised) but submitted only inside the transaction
    # that finishes the row: a crash or a lost lease can neither lose it nor send it twice.
    outgoing: list[tuple[Submission, Any, str]] = dataclasses.field(default_factory=list)
    # Vacation replies: (handle, days, submission, prepared), sent if still due then.
    replies: list[tuple[str, int, Submission, Any]] = dataclasses.field(default_factory=list)


class SieveDelivery:
    """Filters local delivery for the scheduler (`scheduler.sieve`)."""

    def __init__(self, pool: asyncpg.Pool, submitter: Submitter, hostname: str,
                 domain: str) -> None:
        self.pool, self.submitter = pool, submitter
        self.hostname, self.domain = hostname, domain.lower()
        self._srs: SRS | None = None
        self._compiled: OrderedDict[str, Script] = OrderedDict()

    async def srs(self) -> SRS:
        if self._srs is None:
            async with self.pool.acquire() as conn:
                self._srs = SRS(await repo.srs_secret(conn), self.domain)
        return self._srs

    async def reverse(self, address: str) -> str | None:
        """Port 25: the original sender behind one of our SRS0 addresses, else None."""
        if address[:5].upper() != "SRS0=":
            return None
        return (await self.srs()).reverse(address, time.time())

    def compiled(self, source: str) -> Script:
        got = self._compiled.get(source)
        if got is None:
            got = compile_script(source)
            self._compiled[source] = got
            if len(self._compiled) > 256:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(source)
        return got

    async def split(self, rows: Sequence[QueueRow]) -> tuple[list[QueueRow], list[QueueRow]]:
        """(rows delivered as usual, rows to filter): one indexed query for the batch.
        Rows with a folder set by policy (DMARC quarantine to Junk) are not filtered."""
        cands = [r for r in rows if not r.folder]
        if not cands:
            return list(rows), []
        async with self.pool.acquire() as conn:
            held = await repo.with_active_script(conn, list({r.recipient for r in cands}))
        return ([r for r in rows if r.folder or r.recipient not in held],
                [r for r in cands if r.recipient in held])

    async def deliver(self, rows: Sequence[QueueRow], owner: str
                      ) -> tuple[list[QueueRow], dict[int, Outcome]]:
        """Filter and deliver `rows` (leased to `owner`): (rows finished here, outcomes of
        the rows NOT finished, for the scheduler to retry or bounce)."""
        raws: dict[int, bytes] = {}  # a circular: one message, many recipients
        async with self.pool.acquire() as conn:
            scripts = await repo.active_scripts(conn, list({r.recipient for r in rows}))
            for mid in {r.message_id for r in rows}:
                raws[mid] = await qrepo.message_raw(conn, mid)
        plans = []
        for r in rows:
            plans.append(await self._plan(r, raws[r.message_id], scripts.get(r.recipient)))
        return await self._store(plans, owner)

    # ---- one message -----------------------------------------------------------------
    async def _plan(self, row: QueueRow, raw: bytes, source: str | None) -> _Plan:
        plan = _Plan(row, [], [])
        if source is None:  # deactivated since it was queued
            plan.boxes.append((None, ()))
            return plan
        msg = interp.Message(raw, row.sender, row.recipient)
        try:
            actions = interp.run(self.compiled(source), msg)
        except Exception as exc:  # noqa: BLE001 - a broken script never loses mail
            log.warning("sieve script of %s failed (%s): kept in INBOX", row.recipient, exc)
            actions = [interp.Keep()]
        looped = notices.delivered_to(msg.headers("delivered-to"), row.recipient)
        for a in actions:
            try:
                await self._act(a, plan, msg, raw, looped)
            except CxError as exc:
                if exc.smtp_code >= 500:  # e.g. a redirect to an unknown local address
                    log.info("sieve %s for %s refused (%s): kept in INBOX",
                             type(a).__name__.lower(), row.recipient, exc.reason)
                    plan.boxes.append((None, ()))
                    plan.notes.append(f"{type(a).__name__.lower()} refused, kept")
                else:  # the database is away: the whole row is retried later
                    plan.failed = Outcome("temp", 451, "4.3.0", f"sieve: {exc.public}")
                    return plan
        return plan

    async def _act(self, a: interp.Action, plan: _Plan, msg: interp.Message, raw: bytes,
                   looped: bool) -> None:
        row = plan.row
        if isinstance(a, interp.Keep):
            plan.boxes.append((None, clean_flags(a.flags)))
            plan.notes.append("keep")
        elif isinstance(a, interp.FileInto):
            plan.boxes.append((mailbox_name(a.mailbox), clean_flags(a.flags)))
            plan.notes.append(f"fileinto {a.mailbox}")
        elif isinstance(a, interp.Redirect):
            target = a.address.strip().strip("<>")
            if looped or target.lower() == row.recipient.lower():
                # Loop protection: this account already redirected this message once.
                log.info("sieve redirect of %s to %s refused: loop; kept in INBOX",
                         row.recipient, target)
                plan.boxes.append((None, ()))
                plan.notes.append("redirect loop, kept")
                return
            sender = row.sender
            if target.rpartition("@")[2].lower() != self.domain:
                # Outside destination: SRS so that SPF at the destination passes.
                sender = (await self.srs()).forward(sender, time.time())
            sub = Submission(sender, [target], notices.redirected_copy(raw, row.recipient),
                             ClientInfo("LOCAL", "localhost"), "redirect")
            prepared = await self.submitter.prepare(sub)  # an unknown target raises here
            plan.outgoing.append((sub, prepared, f"sieve redirect id={row.queue_id} of"
                                  f" {row.recipient} to <{target}>"))
            plan.notes.append(f"redirect {target}")
        elif isinstance(a, interp.Reject):
            plan.notes.append("reject")
            if not row.sender:  # RFC 5429 §2.1.2: never a notice to the null sender
                log.info("sieve reject id=%s for %s: null sender, discarded", row.queue_id,
                         row.recipient)
                return
            now = datetime.now(UTC)
            notice = notices.reject_notice(
                original=raw, sender=row.sender, recipient=row.recipient, reason=a.reason,
                reporting_ua=self.hostname, postmaster=f"MAILER-DAEMON@{self.domain}", now=now,
                message_id=email.utils.make_msgid(domain=self.hostname),
                boundary=f"{secrets.token_hex(8)}/{self.hostname}")
            sub = Submission("", [row.sender], notice, ClientInfo("LOCAL"), "dsn")
            plan.outgoing.append((sub, await self.submitter.prepare(sub),
                                  f"sieve reject id={row.queue_id} for {row.recipient}:"
                                  f" notice to <{row.sender}>"))
        elif isinstance(a, interp.Vacation):
            await self._vacation(a, plan, msg)

    async def _vacation(self, v: interp.Vacation, plan: _Plan, msg: interp.Message) -> None:
        row = plan.row
        mine = [row.recipient] + ([row.orig_rcpt] if row.orig_rcpt else [])
        ok, why = vacation.should_reply(msg, v, mine)
        if not ok:
            log.info("vacation of %s not sent to <%s>: %s", row.recipient, row.sender, why)
            return
        if v.from_ and email.utils.parseaddr(v.from_)[1].lower() not in (
                {m.lower() for m in mine} | {x.lower() for x in v.addresses}):
            v = dataclasses.replace(v, from_=None)  # RFC 5230 §4.4: only the user's own address
        reply = vacation.build_reply(msg, v, row.recipient, datetime.now(UTC),
                                     email.utils.make_msgid(domain=self.hostname))
        # RFC 5230 §5.1 / RFC 3834 §3.1.2: from the null sender, to the envelope sender.
        sub = Submission("", [row.sender], reply, ClientInfo("LOCAL"), "dsn")
        plan.replies.append((vacation.handle_of(v), v.days, sub,
                             await self.submitter.prepare(sub)))

    # ---- mailboxes -------------------------------------------------------------------
    async def _store(self, plans: list[_Plan], owner: str
                     ) -> tuple[list[QueueRow], dict[int, Outcome]]:
        failed = {p.row.id: p.failed for p in plans if p.failed is not None}
        live = [p for p in plans if p.failed is None]
        async with self.pool.acquire() as conn, conn.transaction():
            mine = await qrepo.lock_owned(conn, owner, [p.row.id for p in live])
            live = [p for p in live if p.row.id in mine]  # a lost lease changes nothing
            for p in live:  # generated mail commits with the row's delivery, or not at all
                for sub, prepared, what in p.outgoing:
                    res = await self.submitter.submit_in(conn, sub, prepared)
                    log.info("%s as id=%s", what, res.queue_id)
                for handle, days, sub, prepared in p.replies:
                    row = p.row
                    if not await repo.vacation_due(conn, row.recipient, row.sender, handle,
                                                   days):
                        log.info("vacation of %s not sent to <%s>: answered within %d days",
                                 row.recipient, row.sender, days)
                        continue
                    res = await self.submitter.submit_in(conn, sub, prepared)
                    log.info("vacation of %s sent to <%s> id=%s", row.recipient, row.sender,
                             res.queue_id)
                    p.notes.append("vacation")
            wanted = {(p.row.recipient, box) for p in live for box, _ in p.boxes if box}
            exist = await repo.existing_mailboxes(conn, sorted(wanted))
            by_box: dict[str, list[tuple[Any, ...]]] = {}
            owner_of: dict[int, _Plan] = {}
            for p in live:
                seen: set[str] = set()
                for box, flags in p.boxes:
                    name = box or "INBOX"
                    if box and (p.row.recipient, box) not in exist:
                        # No autocreate (as Dovecot's lda_mailbox_autocreate = no): INBOX.
                        log.warning("sieve fileinto %r of %s: no such mailbox, delivered to"
                                    " INBOX", box, p.row.recipient)
                        name = "INBOX"
                    if name in seen:  # RFC 5228 §2.10.3: one copy per mailbox
                        continue
                    seen.add(name)
                    key = len(owner_of) + 1
                    owner_of[key] = p
                    by_box.setdefault(name, []).append(
                        (key, p.row.message_id, p.row.recipient, p.row.size, flags))
            done: dict[int, int] = {}
            full: set[int] = set()
            for name in sorted(by_box):
                done.update(await qrepo.deliver_local(conn, by_box[name], full, folder=name))
            ok: list[QueueRow] = []
            details: list[str] = []
            for p in live:
                keys = [k for k, o in owner_of.items() if o is p]
                if keys and not any(k in done for k in keys):
                    failed[p.row.id] = (Outcome("perm", 552, "5.2.2", "mailbox full")
                                        if any(k in full for k in keys)
                                        else Outcome("perm", 550, "5.1.1", "mailbox unavailable"))
                    continue
                ok.append(p.row)
                details.append(("sieve: " + ", ".join(p.notes or ["discard"]))[:200])
            ok = await qrepo.finish(conn, ok, "delivered", details, owner=owner)
        for r in ok:
            log.info("delivered id=%s to=<%s> transport=local sieve", r.queue_id, r.recipient)
        return ok, failed
