"""Documents arriving at ``<unit>.docs@<domain>``: the scheduler's docs handler.

For each queued message (whatever its origin: this gateway, another organisation over
SMTP, a clerk's mail client) one of three things happens:

* a sealed receipt (签收) for a document we sent: verified, the document marked signed;
* an unsealed message from an authenticated clerk of the receiving unit: turned into a
  sealed document (see :mod:`mailrelay.documents.mailform`);
* anything else is a document: its seal is verified (in the executor, once per message
  even for a circular to every unit) against the city CA with revocation, the outer
  header fields are compared with the sealed ones, and the verdict is recorded per
  receiving unit. Trusted documents get an ``X-CX-Seal-Verdict`` field prepended to the
  outer header (outside the signed entity, so the seal still verifies) and land in the
  INBOX of each clerk of the unit; untrusted ones are held, never delivered.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from cxkernel.errors import CxError
from directory.ca import unit_docs_address
from mailrelay.documents import events
from mailrelay.documents import repo as docs_repo
from mailrelay.documents.chain import TrustAnchors, VerifyCache
from mailrelay.documents.docmime import DocumentMeta
from mailrelay.documents.fastmeta import mismatches, outer_fields, read_meta
from mailrelay.documents.mailform import (
    is_authenticated_submission,
    is_local_docs,
    parse_submission,
)
from mailrelay.documents.mimeparts import header, parse_headers, split_entity
from mailrelay.documents.notice import HeldAt, held_notice
from mailrelay.documents.receipt import ReceiptVerdict, verify_receipt
from mailrelay.documents.revocation import RevocationCheck
from mailrelay.documents.verify import Verdict, verify_message
from mailrelay.headers import drop_field
from mailrelay.mime import parse_message
from mailrelay.queue import repo as queue_repo
from mailrelay.queue.repo import QueueRow
from mailrelay.queue.scheduler import Outcome

if TYPE_CHECKING:
    from mailrelay.documents.service import DocumentService

log = logging.getLogger("cxgw.docs")

VERDICT_FIELD = b"X-CX-Seal-Verdict"
EXTRA_REASONS = {
    "header-mismatch": "the outer header fields differ from the sealed document",
    "wrong-recipient": "the sealed document is not addressed to this unit",
    "not-a-document": "the sealed content is not a readable official document",
}


@dataclass(frozen=True)
class Examined:
    """A message read and verified once (in the executor)."""

    verdict: Verdict
    outer: dict[str, str]
    meta: DocumentMeta | None  # the sealed metadata, when the seal is trusted and ours
    mismatches: tuple[str, ...]


def examine(raw: bytes, anchors: TrustAnchors, now: datetime,
            revocation: RevocationCheck | None, cache: VerifyCache) -> Examined:
    """Verify the seal and read the document (pure and blocking: run in the executor)."""
    verdict = verify_message(raw, anchors, now=now, revocation=revocation, cache=cache)
    outer, _ = outer_fields(raw)
    meta = None
    found: tuple[str, ...] = ()
    if verdict.trusted and verdict.content is not None:
        try:
            meta = read_meta(verdict.content)
        except (ValueError, KeyError, TypeError, UnicodeError):
            meta = None
        if meta is not None:
            found = mismatches(outer, meta)
    return Examined(verdict, outer, meta, found)


def stamp(raw: bytes, document: int, verdict: Verdict) -> bytes:
    """The message as delivered: our verdict field first, any forged one removed. The
    signed entity is a body part of multipart/signed, so the seal still verifies."""
    serial = f"{verdict.signer_serial:x}" if verdict.signer_serial is not None else "-"
    value = (f"trusted; doc={document}; signer={verdict.signer_email or '-'};"
             f" serial={serial}; revocation={verdict.revocation_source or 'none'}")
    return header(VERDICT_FIELD.decode(), value) + drop_field(raw, VERDICT_FIELD)


def is_receipt(raw: bytes) -> bool:
    head = split_entity(raw[:16384])[0].lower()
    return b"\nx-cx-doc-receipt:" in head


def unit_of(address: str) -> str:
    local = address.lower().rpartition("@")[0]
    return local.removesuffix(".docs")


class Inbound:
    """Verify, record, deliver or hold; one instance per process."""

    def __init__(self, service: DocumentService) -> None:
        self.s = service

    async def handle(self, rows: Sequence[QueueRow]) -> dict[int, Outcome]:
        await self.s.trust.refresh()
        groups: dict[int, list[QueueRow]] = defaultdict(list)
        for r in rows:
            groups[r.message_id].append(r)
        results: dict[int, Outcome] = {}
        done = await asyncio.gather(*(self._message(mid, g) for mid, g in groups.items()),
                                    return_exceptions=True)
        for (mid, group), res in zip(groups.items(), done, strict=True):
            if isinstance(res, BaseException):
                log.error("document message %d failed: %r", mid, res)
                res = {r.id: Outcome("temp", 451, "4.3.0", "document check failed")
                       for r in group}
            results.update(res)
        return results

    async def _message(self, mid: int, rows: list[QueueRow]) -> dict[int, Outcome]:
        async with self.s.pool.acquire() as conn:
            raw = await queue_repo.message_raw(conn, mid)
        if is_receipt(raw):
            return await self._receipt(mid, raw, rows)
        trust = self.s.trust
        now = datetime.now(UTC)
        ex = await self.s.run(examine, raw, trust.anchors, now, trust.revocation, trust.cache)
        self.s.metrics.inc("docs_verified_total", len(rows), trusted=str(ex.verdict.trusted))
        if ex.verdict.reason == "not-signed" and is_authenticated_submission(raw,
                                                                             rows[0].queue_id):
            return await self._clerk_submission(raw, rows)
        doc = await self._document(mid, raw, rows, ex)
        return await self._decide(doc, raw, rows, ex)

    # ---- documents -------------------------------------------------------------------
    async def _document(self, mid: int, raw: bytes, rows: list[QueueRow],
                        ex: Examined) -> docs_repo.DocRow:
        """Our tracking row: the one `doc send` made, or a new one for an arrival."""
        qid = rows[0].queue_id
        async with self.s.pool.acquire() as conn:
            doc = await docs_repo.by_message(conn, mid)
            if doc is None and is_local_docs(raw, qid):
                doc = await docs_repo.local_unqueued(conn, ex.outer["Message-ID"],
                                                     ex.outer["X-CX-Doc-Id"])
                if doc is not None:
                    await docs_repo.set_queued(conn, doc.id, mid, qid)
            if doc is None:
                doc = await self._new_arrival(conn, mid, rows, ex)
            if ex.verdict.trusted and doc.digest is None:
                await docs_repo.set_digest(conn, doc.id, ex.verdict.digest,
                                           ex.verdict.digest_algorithm)
        return doc

    async def _new_arrival(self, conn: Any, mid: int, rows: list[QueueRow],
                           ex: Examined) -> docs_repo.DocRow:
        o = ex.outer
        meta = ex.meta
        _, sender = email.utils.parseaddr(o["From"])
        sender = sender.lower()
        acct = self.s.book().accounts.get(sender)
        # A mail sealed with a personal certificate (Thunderbird): the person's unit.
        from_unit = (o["X-CX-Doc-From-Unit"] or (acct.unit if acct is not None else None)
                     or sender)
        fields = dict(
            doc_id=meta.doc_id if meta else (o["X-CX-Doc-Id"] or o["Message-ID"] or f"msg-{mid}"),
            title=meta.title if meta else o["Subject"],
            number=meta.number if meta else o["X-CX-Doc-Number"],
            from_unit=meta.from_unit if meta else from_unit,
            from_name=meta.from_unit_name if meta else None,
            sender=sender, urgency=meta.urgency.value if meta else "normal",
            classification=meta.classification.value if meta else "internal",
            origin="smtp", sent_by=None, header_message_id=o["Message-ID"] or None,
            units=sorted({unit_of(r.recipient) for r in rows}), message_id=mid)
        try:
            async with conn.transaction():
                doc_pk = await docs_repo.insert_document(conn, **fields)  # type: ignore[arg-type]
        except asyncpg.UniqueViolationError:  # another batch of the same message was first
            found = await docs_repo.by_message(conn, mid)
            assert found is not None
            return found
        found = await docs_repo.get(conn, doc_pk)
        assert found is not None
        return found

    def _judge(self, doc: docs_repo.DocRow, unit: str, ex: Examined) -> tuple[str, str]:
        """(reason, text) for one receiving unit: "ok" only when everything holds."""
        v = ex.verdict
        if not v.trusted:
            return v.reason, v.text
        if ex.meta is None:
            if ex.outer["X-CX-Doc-Id"]:
                return "not-a-document", EXTRA_REASONS["not-a-document"]
            return "ok", v.text  # a sealed mail (e.g. Thunderbird, personal certificate)
        meta = ex.meta
        if ex.mismatches:
            return "header-mismatch", (f"{EXTRA_REASONS['header-mismatch']}: "
                                       f"{', '.join(ex.mismatches)}")
        if unit not in meta.to_units:
            return "wrong-recipient", EXTRA_REASONS["wrong-recipient"]
        if not self._signer_speaks_for(v.signer_email, meta.from_unit):
            return "sender-mismatch", (f"sealed by {v.signer_email}, which does not speak "
                                       f"for unit {meta.from_unit}")
        return "ok", v.text

    def _signer_speaks_for(self, signer: str | None, unit: str) -> bool:
        if signer is None:
            return False
        if signer == unit_docs_address(unit, self.s.domain):
            return True
        acct = self.s.book().accounts.get(signer)
        return acct is not None and acct.unit == unit

    async def _decide(self, doc: docs_repo.DocRow, raw: bytes, rows: list[QueueRow],
                      ex: Examined) -> dict[int, Outcome]:
        book = self.s.book()
        v = ex.verdict
        serial = f"{v.signer_serial:x}" if v.signer_serial is not None else None
        results: dict[int, Outcome] = {}
        deliver: dict[int, tuple[str, list[str]]] = {}  # row id -> (unit, clerks)
        held: list[tuple[QueueRow, str, str, str]] = []
        async with self.s.pool.acquire() as conn:
            for r in rows:
                unit = unit_of(r.recipient)
                prior = await docs_repo.recipient(conn, doc.id, unit)
                if prior is not None and prior.state in ("delivered", "signed"):
                    results[r.id] = Outcome("ok", 250, "2.0.0", "document already delivered")
                    continue
                reason, text = self._judge(doc, unit, ex)
                if reason != "ok":
                    held.append((r, unit, reason, text))
                    continue
                clerks = book.clerks(unit)
                if not clerks:
                    results[r.id] = Outcome("temp", 450, "4.2.0",
                                            "receiving unit has no active clerk")
                    continue
                deliver[r.id] = (unit, clerks)
            for r, unit, reason, text in held:
                await docs_repo.record_verdict(conn, doc.id, unit, state="held", trusted=False,
                                               reason=reason, text=text,
                                               signer=v.signer_subject, signer_serial=serial)
                results[r.id] = Outcome("ok", 250, "2.0.0", f"document held: {reason}")
                log.warning("document %d for %s held: %s (%s)", doc.id, unit, reason, text)
        if deliver:
            results.update(await self._deliver(doc, raw, rows, deliver, v, serial))
        for _r, unit, reason, text in held:
            await self.s.fire(events.HELD, events.DocumentHeld(doc.id, unit, doc.title,
                                                               doc.from_unit, reason, text))
        if held:
            try:
                await self._notify_held(doc, [HeldAt(u, reason, text)
                                              for _r, u, reason, text in held])
            except Exception:  # the verdict is recorded; a lost notice loses no document
                log.exception("held notice for document %d failed", doc.id)
        return results

    def _notice_recipients(self, doc: docs_repo.DocRow) -> list[str]:
        """Who sent it, as far as this directory knows: the clerks of the sending unit,
        or the person who sealed it with a personal certificate. Nobody outside (no
        backscatter to addresses a forged document names)."""
        book = self.s.book()
        acct = book.accounts.get(doc.sender.lower())
        if acct is not None:  # a mail sealed with a personal certificate: that person
            return [acct.address] if acct.active else []
        if doc.from_unit in book.units:
            return book.clerks(doc.from_unit)
        return []

    async def _notify_held(self, doc: docs_repo.DocRow, held: list[HeldAt]) -> None:
        """Tell the sender why the document was held (once per receiving unit)."""
        to = self._notice_recipients(doc)
        if not to:
            return
        async with self.s.pool.acquire() as conn:
            told = await docs_repo.events_of_kind(conn, doc.id, "held-notice")
        held = [h for h in held if h.unit not in told]
        if not held:
            return
        raw = held_notice(document=doc.id, title=doc.title, number=doc.number, held=held,
                          to=to, domain=self.s.domain, now=datetime.now(UTC),
                          in_reply_to=doc.header_message_id)
        structure = await self.s.run(parse_message, raw)
        async with self.s.pool.acquire() as conn, conn.transaction():
            [mid], _ = await queue_repo.enqueue(
                conn, [f"held-{doc.id}-{held[0].unit}"],
                [queue_repo.NewMessage(raw, structure, [])])
            await queue_repo.deliver_local(conn, [(i, mid, a, len(raw))
                                                  for i, a in enumerate(to)])
            for h in held:
                await docs_repo.add_event(conn, "held-notice", f"{h.reason}: told "
                                          f"{', '.join(to)}", doc=doc.id, unit=h.unit,
                                          message_id=mid)
        self.s.metrics.inc("docs_held_notices_total")

    async def _deliver(self, doc: docs_repo.DocRow, raw: bytes, rows: list[QueueRow],
                       deliver: dict[int, tuple[str, list[str]]], v: Verdict,
                       serial: str | None) -> dict[int, Outcome]:
        stamped = stamp(raw, doc.id, v)
        structure = await self.s.run(parse_message, stamped)
        items: list[tuple[int, int, str, int]] = []
        owner: dict[int, int] = {}
        results: dict[int, Outcome] = {}
        async with self.s.pool.acquire() as conn, conn.transaction():
            [smid], _ = await queue_repo.enqueue(
                conn, [rows[0].queue_id], [queue_repo.NewMessage(stamped, structure, [])])
            for rid, (_unit, clerks) in deliver.items():
                for c in clerks:
                    owner[len(items)] = rid
                    items.append((len(items), smid, c, len(stamped)))
            done = await queue_repo.deliver_local(conn, items)
            got: dict[int, int] = defaultdict(int)
            for key in done:
                got[owner[key]] += 1
            for rid, (unit, _clerks) in deliver.items():
                if not got[rid]:
                    results[rid] = Outcome("temp", 450, "4.2.0", "clerk mailboxes unavailable")
                    continue
                await docs_repo.record_verdict(conn, doc.id, unit, state="delivered",
                                               trusted=True, reason="ok", text=v.text,
                                               signer=v.signer_subject, signer_serial=serial,
                                               delivered_message_id=smid, clerks=got[rid])
                results[rid] = Outcome("ok", 250, "2.0.0",
                                       f"seal verified; delivered to {got[rid]} clerks")
        for rid, (unit, clerks) in deliver.items():
            if results[rid].status == "ok":
                log.info("document %d verified and delivered to %s (%d clerks)", doc.id, unit,
                         len(clerks))
                await self.s.fire(events.ARRIVED, events.DocumentArrived(
                    doc.id, doc.doc_id, unit, tuple(clerks), doc.title, doc.number,
                    doc.from_unit, doc.urgency, v.signer_email))
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
        outer = parse_headers(split_entity(raw)[0])
        in_reply = " ".join(str(outer.get("In-Reply-To", "")).split())
        _, sender = email.utils.parseaddr(str(outer.get("From", "")))
        receiver_unit = unit_of(sender)
        trust = self.s.trust
        results: dict[int, Outcome] = {}
        for r in rows:
            unit = unit_of(r.recipient)
            async with self.s.pool.acquire() as conn:
                doc = await docs_repo.for_receipt(conn, in_reply, unit) if in_reply else None
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
                revocation=trust.revocation, cache=trust.cache)
            if not rv.trusted:
                await self._reject_receipt(doc, receiver_unit, mid, rv.reason, rv.text)
                results[r.id] = Outcome("ok", 250, "2.0.0", f"receipt held: {rv.reason}")
                continue
            by = rv.receipt.final_recipient if rv.receipt else sender
            async with self.s.pool.acquire() as conn:
                await docs_repo.mark_signed(conn, doc.id, receiver_unit, by=by,
                                            at=datetime.now(UTC), receipt_message_id=mid)
                signed = await docs_repo.recipient(conn, doc.id, receiver_unit)
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
        """A verified receipt also lands in the sending unit's clerks' INBOXes."""
        clerks = self.s.book().clerks(unit)
        if clerks:
            stamped = stamp(raw, doc.id, seal)
            structure = await self.s.run(parse_message, stamped)
            async with self.s.pool.acquire() as conn, conn.transaction():
                [smid], _ = await queue_repo.enqueue(
                    conn, [row.queue_id], [queue_repo.NewMessage(stamped, structure, [])])
                await queue_repo.deliver_local(conn, [(i, smid, c, len(stamped))
                                                      for i, c in enumerate(clerks)])
        return {row.id: Outcome("ok", 250, "2.0.0", "signed receipt verified")}
