"""What comes back to a document inbox from people and units, for :class:`Inbound`.

* a read receipt (RFC 8098 MDN) from a clerk's mail client: sealed on the clerk's behalf
  when an authenticated clerk of a receiving unit sent it, refused (5.7.1) otherwise;
* an unsealed message from an authenticated clerk of the unit: a document to seal;
* a sealed receipt (签收) for a document sent from here: matched by document id and unit
  (issue #11 item 3); a second one changes nothing.
"""

from __future__ import annotations

import email.utils
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from cxkernel.errors import CxError
from directory.ca import unit_docs_address
from mailrelay.documents import events
from mailrelay.documents import repo as docs_repo
from mailrelay.documents.arrival import signed_copy, stamp, unit_of, verdict_value
from mailrelay.documents.clerkmdn import read_receipt_request
from mailrelay.documents.mailform import is_authenticated_submission, parse_submission
from mailrelay.documents.mimeparts import parse_headers, split_entity
from mailrelay.documents.receipt import ReceiptVerdict, verify_receipt
from mailrelay.documents.verify import Verdict, find_signed
from mailrelay.queue.repo import QueueRow
from mailrelay.queue.scheduler import Outcome

if TYPE_CHECKING:
    from mailrelay.documents.service import DocumentService

log = logging.getLogger("cxgw.docs")


class Replies:
    """Mixed into :class:`mailrelay.documents.inbound.Inbound`."""

    s: DocumentService

    # ---- read receipts from clerks' mail clients (issue #11 item 7) ---------------------
    async def _clerk_mdn(self, raw: bytes, rows: list[QueueRow]) -> dict[int, Outcome]:
        book = self.s.book()
        results: dict[int, Outcome] = {}
        refused = ("only an authenticated clerk of a receiving unit can sign for a document"
                   " with a read receipt")
        for r in rows:
            acct = book.accounts.get(r.sender.lower())
            if (not is_authenticated_submission(raw, r.queue_id) or acct is None
                    or not acct.active or "clerk" not in acct.roles):
                results[r.id] = Outcome("perm", 550, "5.7.1", refused)
                log.warning("read receipt from <%s> refused: not an authenticated clerk",
                            r.sender)
                continue
            try:
                req = await self.s.run(read_receipt_request, raw)
            except ValueError as exc:
                results[r.id] = Outcome("perm", 550, "5.6.0", f"unreadable read receipt: {exc}")
                continue
            if not req.displayed:
                results[r.id] = Outcome("ok", 250, "2.0.0", f"disposition {req.disposition}"
                                        " noted; only a displayed document is signed for")
                continue
            async with self.s.pool.acquire() as conn:
                doc = await docs_repo.delivered_to(conn, req.original_message_id,
                                                   unit_of(r.recipient), acct.unit)
                rcpt = (await docs_repo.recipient(conn, doc.id, acct.unit)
                        if doc is not None else None)
            if doc is None or rcpt is None or rcpt.state not in ("delivered", "signed"):
                results[r.id] = Outcome("perm", 550, "5.7.1", "no document delivered to your"
                                        " unit has that Message-ID")
                continue
            if rcpt.state == "signed" or rcpt.receipt_sent_at is not None:
                results[r.id] = Outcome("ok", 250, "2.0.0", "already signed for")
                continue
            try:
                sent = await self.s.receipt(str(doc.id), by=acct.address, unit=acct.unit)
            except CxError as exc:
                results[r.id] = Outcome("perm", 550, "5.7.1", f"not signed for: {exc.public}")
                continue
            log.info("document %d signed for by %s from a read receipt", doc.id, acct.address)
            results[r.id] = Outcome("ok", 250, "2.0.0", f"signed for document {doc.id} with"
                                    f" the seal of {sent['unit']}")
        return results

    # ---- clerk submissions -----------------------------------------------------------
    async def _clerk_submission(self, raw: bytes, rows: list[QueueRow]) -> dict[int, Outcome]:
        book = self.s.book()
        results: dict[int, Outcome] = {}
        for r in rows:
            unit = unit_of(r.recipient)
            acct = book.accounts.get(r.sender.lower())
            if acct is None or not acct.active or "clerk" not in acct.roles or acct.unit != unit:
                results[r.id] = Outcome("perm", 550, "5.7.1", "only a clerk of the unit may"
                                        " submit documents to its document inbox")
                continue
            try:
                req = await self.s.run(parse_submission, raw)
                sent = await self.s.send(from_unit=unit, to=req.to, title=req.title,
                                         number=req.number, attachments=req.attachments,
                                         note=req.note, urgency=req.urgency.value,
                                         classification=req.classification.value,
                                         origin="mail", sent_by=acct.address)
            except CxError as exc:
                results[r.id] = Outcome("perm", 550, "5.6.0",
                                        f"document not sent: {exc.public}")
                continue
            results[r.id] = Outcome("ok", 250, "2.0.0",
                                    f"sealed and sent as document {sent.id}")
        return results

    # ---- receipts --------------------------------------------------------------------
    async def _receipt(self, mid: int, raw: bytes, rows: list[QueueRow]) -> dict[int, Outcome]:
        """A sealed receipt for a document this gateway sent. Issue #11 item 3: matched by
        document id and unit (the signed receipt names both, with the digest); a second
        receipt for the same document and unit changes nothing."""
        outer = parse_headers(split_entity(raw)[0])
        doc_key = " ".join(str(outer.get("X-CX-Doc-Id", "")).split())
        _, sender = email.utils.parseaddr(str(outer.get("From", "")))
        receiver_unit = unit_of(sender)
        trust = self.s.trust
        results: dict[int, Outcome] = {}
        for r in rows:
            unit = unit_of(r.recipient)
            async with self.s.pool.acquire() as conn:
                doc = await docs_repo.sent_document(conn, doc_key, unit) if doc_key else None
                rcpt = (await docs_repo.recipient(conn, doc.id, receiver_unit)
                        if doc is not None else None)
            if doc is None or rcpt is None or doc.digest is None or not doc.header_message_id:
                await self._reject_receipt(doc, unit, mid, "unknown-document",
                                           "the receipt answers no document of this unit")
                results[r.id] = Outcome("ok", 250, "2.0.0", "receipt held: unknown document")
                continue
            rv: ReceiptVerdict = await self.s.run(
                verify_receipt, raw, trust.anchors, now=datetime.now(UTC),
                original_message_id=doc.header_message_id, original_digest=doc.digest,
                digest_algorithm=doc.digest_algorithm or "sha256", doc_id=doc.doc_id,
                expected_receiver=unit_docs_address(receiver_unit, self.s.domain),
                revocation=trust.revocation, cache=trust.cache, issued=trust.issued)
            if not rv.trusted:
                await self._reject_receipt(doc, receiver_unit, mid, rv.reason, rv.text)
                results[r.id] = Outcome("ok", 250, "2.0.0", f"receipt held: {rv.reason}")
                continue
            by = rv.receipt.final_recipient if rv.receipt else sender
            async with self.s.pool.acquire() as conn:
                first = await docs_repo.mark_signed(conn, doc.id, receiver_unit, by=by,
                                                    at=datetime.now(UTC),
                                                    receipt_message_id=mid)
                signed = await docs_repo.recipient(conn, doc.id, receiver_unit)
                if not first:
                    await docs_repo.add_event(conn, "receipt-ignored", "a receipt for a"
                                              " document already signed for, or not"
                                              " delivered: nothing changed", doc=doc.id,
                                              unit=receiver_unit, message_id=mid)
            if not first:
                results[r.id] = Outcome("ok", 250, "2.0.0", "receipt already recorded")
                continue
            results.update(await self._deliver_receipt(doc, raw, r, unit, rv.seal))
            who = signed.signed_by if signed and signed.signed_by else by
            log.info("document %d signed for by %s (%s)", doc.id, receiver_unit, who)
            await self.s.fire(events.SIGNED, events.DocumentSigned(
                doc.id, receiver_unit, doc.from_unit, doc.title, who))
        return results

    async def _reject_receipt(self, doc: docs_repo.DocRow | None, unit: str, mid: int,
                              reason: str, text: str) -> None:
        log.warning("receipt for document %s rejected: %s (%s)", doc.id if doc else "?",
                    reason, text)
        async with self.s.pool.acquire() as conn:
            await docs_repo.add_event(conn, "receipt-rejected", f"{reason}: {text}",
                                      doc=doc.id if doc else None, unit=unit, message_id=mid)

    async def _deliver_receipt(self, doc: docs_repo.DocRow, raw: bytes, row: QueueRow,
                               unit: str, seal: Verdict) -> dict[int, Outcome]:
        """A verified receipt also lands in the sending unit's clerks' INBOXes, rebuilt
        from the seal and what it covers."""
        clerks = self.s.book().clerks(unit)
        found = find_signed(raw)
        if clerks and found is not None:
            copy = signed_copy(raw, found, receipt=True)
            await self.s.store_and_deliver(stamp(copy, verdict_value("trusted", doc.id, seal)),
                                           clerks)
        return {row.id: Outcome("ok", 250, "2.0.0", "signed receipt verified")}
