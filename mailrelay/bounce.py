"""The bounce stage: turn failed, delayed, delivered or relayed recipients of one queue id
into an RFC 3464 DSN and send it to the envelope sender through the ordinary submission
stage (null sender, so a DSN is never bounced again). Success notices ("delivered" at
local delivery, "relayed" to a next hop without DSN) only go out when the recipient asked
with NOTIFY=SUCCESS (RFC 3461 §4.1); the scheduler and the submission stage decide that."""

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
        action: dsn.Action = kind  # type: ignore[assignment]
        recipients = []
        for row, out in items:
            recipients.append(dsn.DsnRecipient(
                final_recipient=row.recipient, original_recipient=row.orig_rcpt,
                action=action, status=out.enhanced,
                diagnostic=f"smtp; {out.code} {out.enhanced} {out.text}",
                remote_mta=out.remote_mta or None, last_attempt=now,
                will_retry_until=(row.created_at + timedelta(seconds=self.cfg.max_age)
                                  if kind == "delayed" else None)))
        await self.send(kind, first.queue_id, first.sender, first.envid, first.ret,
                        first.created_at, raw, recipients)

    async def delivered_inline(self, queue_id: str, sender: str, envid: str | None,
                               raw: bytes, recipients: Sequence[tuple[str, str | None]]) -> None:
        """Success notices for recipients delivered at submission (the inline local stage)."""
        now = datetime.now(UTC)
        rcpts = [dsn.DsnRecipient(final_recipient=r, original_recipient=o, action="delivered",
                                  status="2.0.0", diagnostic=None, remote_mta=None,
                                  last_attempt=now) for r, o in recipients]
        await self.send("delivered", queue_id, sender, envid, None, now, raw, rcpts)

    async def send(self, kind: str, queue_id: str, sender: str, envid: str | None,
                   ret: str | None, arrival: datetime, raw: bytes,
                   recipients: list[dsn.DsnRecipient]) -> None:
        now = datetime.now(UTC)
        message = dsn.make_dsn(
            reporting_mta=self.hostname, postmaster=f"postmaster@{self.domain}",  # exists now
            original_sender=sender, original_headers=header_block(raw),
            original_envelope_id=envid, recipients=recipients,
            arrival_date=arrival, queue_id=queue_id,
            # RFC 3461 §4.3: RET=FULL returns the whole message in a failure notice only.
            ret_full=raw if kind == "failed" and (ret or "").upper() == "FULL" else None,
            now=now)
        result = await self.submitter.submit(Submission(
            "", [sender], message, ClientInfo("LOCAL"), "dsn"))
        log.info("dsn id=%s kind=%s for=%s to=<%s>", result.queue_id, kind, queue_id, sender)
