"""The bounce stage: turn failed or delayed recipients of one queue id into an RFC 3464 DSN
and send it to the envelope sender through the ordinary submission stage (null sender,
so a DSN is never bounced again)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg

from cxkernel.config import QueueConfig
from mailrelay import dsn
from mailrelay.headers import header_block
from mailrelay.queue import repo
from mailrelay.queue.repo import QueueRow
from mailrelay.queue.scheduler import Outcome
from mailrelay.submit import ClientInfo, Submission, Submitter

log = logging.getLogger("cxgw.bounce")


class Bouncer:
    def __init__(self, pool: asyncpg.Pool, submitter: Submitter, hostname: str, domain: str,
                 queue_cfg: QueueConfig) -> None:
        self.pool = pool
        self.submitter = submitter
        self.hostname = hostname
        self.domain = domain
        self.cfg = queue_cfg

    async def __call__(self, items: Sequence[tuple[QueueRow, Outcome]], kind: str) -> None:
        first = items[0][0]
        async with self.pool.acquire() as conn:
            raw = await repo.message_raw(conn, first.message_id)
        now = datetime.now(UTC)
        recipients = []
        for row, out in items:
            recipients.append(dsn.DsnRecipient(
                final_recipient=row.recipient, original_recipient=row.orig_rcpt,
                action="failed" if kind == "failed" else "delayed", status=out.enhanced,
                diagnostic=f"smtp; {out.code} {out.enhanced} {out.text}",
                remote_mta=out.remote_mta or None, last_attempt=now,
                will_retry_until=(row.created_at + timedelta(seconds=self.cfg.max_age)
                                  if kind == "delayed" else None)))
        message = dsn.make_dsn(
            reporting_mta=self.hostname, postmaster=f"MAILER-DAEMON@{self.domain}",
            original_sender=first.sender, original_headers=header_block(raw),
            original_envelope_id=first.envid, recipients=recipients,
            arrival_date=first.created_at, queue_id=first.queue_id,
            ret_full=raw if (first.ret or "").upper() == "FULL" else None, now=now)
        result = await self.submitter.submit(Submission(
            "", [first.sender], message, ClientInfo("LOCAL"), "dsn"))
        log.info("dsn id=%s kind=%s for=%s to=<%s>", result.queue_id, kind, first.queue_id,
                 first.sender)
