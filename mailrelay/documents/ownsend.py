"""Documents to our own units, verified and delivered while they are sent (issue #17
item 4).

A document `doc send` (or a clerk's mail) seals goes to ``<unit>.docs@`` of units of
this very gateway. Queued, it was stored twice (the sealed message for the docs
handler, then the clerks' stamped copy) and cost some twenty statements. Here the
sending process does what the docs handler would do, with the handler's own code, on
the very bytes it would read back:

* :func:`mailrelay.documents.arrival.examine` (the seal, the chain, revocation, the
  signed metadata, the copy rebuilt from verified bytes), then the handler's judgement
  per receiving unit (:meth:`Inbound._judge`). Only when every unit would get the
  document ("ok") and has an active clerk is it delivered here; anything else (held,
  no clerk, not trusted) takes the queue to the handler, which holds, notifies or
  retries as for any arrival. Nothing is delivered here that the handler would not
  deliver (fail closed).
* ONE stored copy: the clerks' stamped copy (``X-CX-Seal-Verdict`` over the rebuilt
  signed entity), referenced by every clerk's INBOX, by the document row and by each
  unit's delivered verdict. The sealed message as sent is not stored.
* The document rows, the copies in the INBOXes and the verdicts commit together or not
  at all. Documents sent at the same time share one transaction (group commit: while
  one commits, the next batch gathers): one COPY of their copies, one local-delivery
  statement, one statement for every document and recipient row. If the transaction
  fails, every sender of the batch gets the error and nothing of it was written; a
  sender is answered with an id only after COMMIT.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cxkernel.batcher import Batcher
from mailrelay.documents import events
from mailrelay.documents import repo as docs_repo
from mailrelay.documents.arrival import Examined, examine, stamp, verdict_value
from mailrelay.documents.docmime import DocumentMeta
from mailrelay.documents.inbound import number_warning
from mailrelay.queue.repo import NewMessage
from mailrelay.submit import ClientInfo, Submission, SubmitResult

if TYPE_CHECKING:
    from mailrelay.documents.service import DocumentService

log = logging.getLogger("cxgw.docs")
LOCAL = ClientInfo(protocol="LOCAL")
MAX_BATCH = 64  # documents per group commit


@dataclass(frozen=True)
class Verified:
    """A document we sealed, examined as the docs handler examines an arrival and found
    deliverable at once to every receiving unit: unit -> its active clerks."""

    examined: Examined
    clerks: dict[str, list[str]]


@dataclass(frozen=True)
class Ready:
    """A verified document with its clerks' copy through the submission stage's
    preparation (headers, routing, MIME structure): only the writes are left."""

    meta: DocumentMeta
    verified: Verified
    row: docs_repo.Delivered  # message_id and queue_id filled in by the write
    submission: Submission
    prepared: tuple[str, NewMessage]


class OwnDelivery:
    """Verify, prepare and write documents to our own units; one per DocumentService."""

    def __init__(self, service: DocumentService, max_batch: int = MAX_BATCH,
                 max_inflight: int = 2) -> None:
        self.s = service
        self.max_batch = max_batch
        self._batches: Batcher[tuple[Ready, asyncio.Future[SubmitResult]]] = Batcher(
            self._commit, max_batch=max_batch, max_inflight=max_inflight)
        self.commits = 0  # group commits made (benchmarks: documents per commit)

    async def verify(self, raw: bytes, units: Sequence[str]) -> Verified | None:
        """The docs handler's examination of ``raw`` and judgement for each unit; None
        when any unit would not get it now (then it is queued to the handler)."""
        s = self.s
        trust = s.trust
        ex = await s.run(examine, raw, trust.anchors, datetime.now(UTC), trust.revocation,
                         trust.cache, trust.issued)
        s.metrics.inc("docs_verified_total", len(units), trusted=str(ex.verdict.trusted))
        ex = s.inbound._account_state(ex)
        if not ex.is_document or ex.delivered is None:
            log.info("document not verified at once (%s): queued to the docs handler",
                     ex.verdict.reason)
            return None
        book = s.book()
        clerks: dict[str, list[str]] = {}
        for unit in units:
            reason, _text = s.inbound._judge(unit, ex, set())
            to = book.clerks(unit)
            if reason != "ok" or not to:
                log.info("document for %s not deliverable at once (%s): queued to the docs"
                         " handler", unit, reason if reason != "ok" else "no active clerk")
                return None
            clerks[unit] = to
        return Verified(ex, clerks)

    async def prepare(self, meta: DocumentMeta, verified: Verified, *, sender: str,
                      header_message_id: str | None, digest: bytes, origin: str,
                      sent_by: str | None, source_message_id: int | None = None) -> Ready:
        """Reserve the document id (the copy names it), stamp the copy as the handler
        does, and run the submission stage's preparation (no transaction open yet)."""
        s = self.s
        ex = verified.examined
        v = ex.verdict
        assert ex.delivered is not None
        async with s.pool.acquire() as conn:
            doc, dup = await docs_repo.reserve_document(conn, meta.from_unit, meta.number,
                                                        meta.doc_id)
        warning = number_warning(meta.number, dup)
        to: list[str] = []
        for clerks in verified.clerks.values():
            to += [c for c in clerks if c not in to]
        copy = stamp(ex.delivered, verdict_value("trusted", doc, v), warning)
        sub = Submission("", to, copy, LOCAL, "docs")
        prepared = await s.submitter.prepare(sub)
        row = docs_repo.Delivered(
            id=doc, doc_id=meta.doc_id, title=meta.title, number=meta.number,
            from_unit=meta.from_unit, from_name=meta.from_unit_name, sender=sender,
            urgency=meta.urgency.value, classification=meta.classification.value,
            origin=origin, sent_by=sent_by, header_message_id=header_message_id,
            digest=digest, source_message_id=source_message_id, message_id=0, queue_id="",
            units=tuple(verified.clerks), clerks=tuple(len(c) for c in verified.clerks.values()),
            text=v.text, signer=v.signer_subject,
            signer_serial=f"{v.signer_serial:x}" if v.signer_serial is not None else None,
            warning=warning)
        return Ready(meta, verified, row, sub, prepared)

    async def write(self, conn: Any, items: Sequence[Ready]) -> list[SubmitResult]:
        """In the caller's transaction: every copy into its clerks' INBOXes, then every
        document row with its units' delivered verdicts."""
        results = await self.s.submitter.submit_many_in(
            conn, [(r.submission, r.prepared) for r in items])
        await self.s.at("copy-stored")
        await docs_repo.insert_delivered(conn, [
            _with_copy(r.row, res) for r, res in zip(items, results, strict=True)])
        return results

    # ---- group commit ------------------------------------------------------------------
    async def commit(self, item: Ready) -> SubmitResult:
        """Write ``item`` with the documents sent meanwhile, in one transaction; returns
        after its COMMIT (or raises, and nothing of the batch was written)."""
        fut: asyncio.Future[SubmitResult] = asyncio.get_running_loop().create_future()
        self._batches.add((item, fut))
        return await fut

    async def _commit(self, batch: list[tuple[Ready, asyncio.Future[SubmitResult]]]) -> None:
        try:
            async with self.s.pool.acquire() as conn, conn.transaction():
                results = await self.write(conn, [b[0] for b in batch])
        except BaseException as exc:  # every sender gets an answer, never a hang
            if len(batch) > 1:
                log.error("group commit of %d documents failed: %r", len(batch), exc)
            for _r, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            self.commits += 1
            for (_r, fut), res in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(res)

    async def close(self) -> None:
        """Wait for documents being written."""
        await self._batches.drain()

    async def announce(self, item: Ready, result: SubmitResult) -> None:
        """After COMMIT: metrics, the log line, the clerks' events (XMPP)."""
        s, meta = self.s, item.meta
        s.metrics.inc("docs_sent_total", origin=item.row.origin)
        log.info("document %d (%s) sealed by %s, verified and delivered to %d units as %s",
                 item.row.id, meta.doc_id, meta.from_unit, len(item.verified.clerks),
                 result.queue_id)
        signer_email = item.verified.examined.verdict.signer_email
        for unit, clerks in item.verified.clerks.items():
            await s.fire(events.ARRIVED, events.DocumentArrived(
                item.row.id, meta.doc_id, unit, tuple(clerks), meta.title, meta.number,
                meta.from_unit, meta.urgency.value, signer_email))


def _with_copy(row: docs_repo.Delivered, result: SubmitResult) -> docs_repo.Delivered:
    return replace(row, message_id=result.message_id, queue_id=result.queue_id)
