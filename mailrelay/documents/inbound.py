"""Documents arriving at ``<unit>.docs@<domain>``: the scheduler's docs handler.

For each queued message (whatever its origin: this gateway, another organisation over
SMTP, a clerk's mail client) one of these happens:

* a sealed receipt (签收) for a document we sent: verified, matched by document id and
  unit, the document marked signed (once: a replayed receipt changes nothing);
* a read receipt (RFC 8098 MDN) from an authenticated clerk of a receiving unit: the
  server seals a receipt with that unit's seal on the clerk's behalf
  (:mod:`mailrelay.documents.replies`); from anyone else it is refused (5.7.1);
* an unsealed message from an authenticated clerk of the receiving unit: turned into a
  sealed document (see :mod:`mailrelay.documents.mailform`);
* anything else is examined once (:func:`mailrelay.documents.arrival.examine`): only a
  top-level seal is trusted, and the clerk gets the signed entity rebuilt under verified
  header fields plus our ``X-CX-Seal-Verdict`` field, never what is outside the seal. A
  validly signed mail that is not a cx document is delivered as signed mail and never
  registered; a cx document is registered from its signed content only, once per
  receiving unit (a second arrival is held as ``replay``); everything else is held.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from directory.ca import unit_docs_address
from mailrelay.documents import events
from mailrelay.documents import repo as docs_repo
from mailrelay.documents.arrival import (
    Examined,
    examine,
    is_receipt,
    stamp,
    unit_of,
    verdict_value,
)
from mailrelay.documents.clerkmdn import is_mdn
from mailrelay.documents.mailform import (
    is_authenticated_submission,
    is_local_docs,
)
from mailrelay.documents.notice import HeldAt, held_notice
from mailrelay.documents.replies import Replies
from mailrelay.documents.trust import IssuedCert
from mailrelay.documents.verify import REASONS, Verdict
from mailrelay.queue import repo as queue_repo
from mailrelay.queue.repo import QueueRow
from mailrelay.queue.scheduler import Outcome

if TYPE_CHECKING:
    from mailrelay.documents.service import DocumentService

log = logging.getLogger("cxgw.docs")
EXTRA_REASONS = {
    "header-mismatch": "the outer header fields differ from the sealed document",
    "wrong-recipient": "the sealed document is not addressed to this unit",
    "not-a-document": "the sealed content is not a readable official document",
    "replay": "this document was already registered for this unit (a replayed copy)",
    "signer-not-clerk": "the seal is neither the unit's seal nor the certificate of an"
                        " active clerk of the unit",
    "revoked-after-delivery": "the seal was revoked for key compromise after delivery",
}
REASONS.update({k: v for k, v in EXTRA_REASONS.items() if k not in REASONS})


class Inbound(Replies):
    """Verify, record, deliver or hold; one instance per process."""

    def __init__(self, service: DocumentService) -> None:
        self.s = service

    async def handle(self, rows: Sequence[QueueRow]) -> dict[int, Outcome]:
        if await self.s.trust.refresh():
            # A certificate changed (perhaps revoked for key compromise while this
            # process missed the NOTIFY): re-examine delivered documents too.
            try:
                await self.s.reexamine_compromised()
            except Exception:
                log.exception("re-examining documents after a revocation failed")
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
        if is_mdn(raw):
            return await self._clerk_mdn(raw, rows)
        trust = self.s.trust
        now = datetime.now(UTC)
        ex = await self.s.run(examine, raw, trust.anchors, now, trust.revocation, trust.cache,
                              trust.issued)
        self.s.metrics.inc("docs_verified_total", len(rows), trusted=str(ex.verdict.trusted))
        if ex.verdict.reason == "not-signed" and is_authenticated_submission(raw,
                                                                             rows[0].queue_id):
            return await self._clerk_submission(raw, rows)
        ex = self._account_state(ex)
        if ex.verdict.trusted and ex.meta is None:
            return await self._signed_mail(rows, ex)
        doc, replayed = await self._document(mid, raw, rows, ex)
        return await self._decide(doc, rows, ex, replayed)

    # ---- who speaks for a unit (issue #11 item 5) ---------------------------------------
    def _owner(self, v: Verdict) -> IssuedCert | None:
        return self.s.trust.owner(v.signer_certificate)

    def _account_state(self, ex: Examined) -> Examined:
        """A personal certificate counts only while its holder's account is active."""
        v = ex.verdict
        owner = self._owner(v)
        if not v.trusted or owner is None or owner.kind != "personal":
            return ex
        acct = self.s.book().accounts.get(owner.address)
        if acct is not None and acct.active:
            return ex
        bad = dataclasses.replace(v, trusted=False, reason="signer-not-clerk",
                                  text=f"{owner.address} is disabled or removed")
        return dataclasses.replace(ex, verdict=bad, delivered=None)

    def _speaks_for(self, v: Verdict, unit: str) -> tuple[str, str] | None:
        """None when the signer may speak for ``unit``, else (reason, text)."""
        owner = self._owner(v)
        if owner is None:
            return "sender-mismatch", f"sealed by {v.signer_email}, not a seal of {unit}"
        if owner.kind == "seal":
            if owner.unit == unit and v.signer_email == unit_docs_address(unit, self.s.domain):
                return None
            return "sender-mismatch", (f"sealed by {v.signer_email}, which does not speak "
                                       f"for unit {unit}")
        acct = self.s.book().accounts.get(owner.address)
        if (acct is not None and acct.active and "clerk" in acct.roles
                and acct.unit == unit and owner.unit == unit):
            return None
        return "signer-not-clerk", (f"{owner.address} is not an active clerk of {unit}: "
                                    f"{EXTRA_REASONS['signer-not-clerk']}")

    # ---- signed mail that is not a document --------------------------------------------
    async def _signed_mail(self, rows: list[QueueRow], ex: Examined) -> dict[int, Outcome]:
        """Issue #11 item 2: validly signed, not a cx document: delivered as signed mail
        (a "signed" stamp, not "trusted"), never registered as a document."""
        assert ex.delivered is not None
        book = self.s.book()
        results: dict[int, Outcome] = {}
        to: list[str] = []
        for r in rows:
            clerks = book.clerks(unit_of(r.recipient))
            if not clerks:
                results[r.id] = Outcome("temp", 450, "4.2.0", "receiving unit has no active clerk")
                continue
            to += [c for c in clerks if c not in to]
        if to:
            value = verdict_value("signed", None, ex.verdict) + "; not-a-document"
            await self.s.store_and_deliver(stamp(ex.delivered, value), to)
            log.info("signed mail from %s delivered to %d clerks (not a document)",
                     ex.verdict.signer_email, len(to))
        for r in rows:
            results.setdefault(r.id, Outcome("ok", 250, "2.0.0",
                                             "signature verified; delivered as signed mail"))
        return results

    # ---- documents -------------------------------------------------------------------
    async def _document(self, mid: int, raw: bytes, rows: list[QueueRow],
                        ex: Examined) -> tuple[docs_repo.DocRow, set[str]]:
        """Our tracking row (the one `doc send` made, or a new one for an arrival) and
        the receiving units that already have this document (replays)."""
        qid = rows[0].queue_id
        meta = ex.meta if ex.is_document else None
        async with self.s.pool.acquire() as conn:
            doc = await docs_repo.by_message(conn, mid)
            if doc is None and meta is not None and is_local_docs(raw, qid):
                doc = await docs_repo.local_unqueued(conn, ex.message_id, meta.doc_id)
                if doc is not None:
                    await docs_repo.set_queued(conn, doc.id, mid, qid)
            if doc is not None:
                if ex.verdict.trusted and doc.digest is None:
                    await docs_repo.set_digest(conn, doc.id, ex.verdict.digest,
                                               ex.verdict.digest_algorithm)
                return doc, set()
            return await self._new_arrival(conn, mid, rows, ex)

    async def _new_arrival(self, conn: Any, mid: int, rows: list[QueueRow],
                           ex: Examined) -> tuple[docs_repo.DocRow, set[str]]:
        """Register an arrival from signed content only (issue #11 item 2); what is not
        verified is recorded as such (an ``unverified-`` id, the unsigned Subject)."""
        meta = ex.meta if ex.is_document else None
        v = ex.verdict
        units = sorted({unit_of(r.recipient) for r in rows})
        owner = self._owner(v)
        if meta is not None:
            fields = dict(
                doc_id=meta.doc_id, title=meta.title, number=meta.number,
                from_unit=meta.from_unit, from_name=meta.from_unit_name,
                sender=v.signer_email or "", urgency=meta.urgency.value,
                classification=meta.classification.value,
                header_message_id=ex.message_id or None, digest=v.digest,
                digest_algorithm=v.digest_algorithm)
        else:
            fields = dict(
                doc_id=f"unverified-{mid}", title=ex.outer["Subject"], number="",
                from_unit=owner.unit or "" if owner else "", from_name=None,
                sender=owner.address if owner else "", urgency="normal",
                classification="internal", header_message_id=None)
        async with conn.transaction():
            replayed: set[str] = set()
            if meta is not None:
                # Issue #11 item 3: one registration per document id and receiving unit,
                # across every process (the lock serialises arrivals of one document).
                await docs_repo.lock_doc_id(conn, meta.doc_id)
                found = await docs_repo.by_message(conn, mid)
                if found is not None:  # another batch of the same message was first
                    return found, set()
                replayed = await docs_repo.units_with_doc_id(conn, meta.doc_id, units)
            try:
                async with conn.transaction():
                    doc_pk = await docs_repo.insert_document(
                        conn, origin="smtp", sent_by=None, units=units, message_id=mid,
                        **fields)  # type: ignore[arg-type]
            except asyncpg.UniqueViolationError:  # another batch of the same message
                found = await docs_repo.by_message(conn, mid)
                assert found is not None
                return found, set()
        doc = await docs_repo.get(conn, doc_pk)
        assert doc is not None
        return doc, replayed

    def _judge(self, unit: str, ex: Examined, replayed: set[str]) -> tuple[str, str]:
        """(reason, text) for one receiving unit: "ok" only when everything holds."""
        v = ex.verdict
        if not v.trusted:
            return v.reason, v.text
        meta = ex.meta
        if meta is None:
            return "not-a-document", EXTRA_REASONS["not-a-document"]
        if unit in replayed:
            return "replay", EXTRA_REASONS["replay"]
        if ex.mismatches:
            return "header-mismatch", (f"{EXTRA_REASONS['header-mismatch']}: "
                                       f"{', '.join(ex.mismatches)}")
        if unit not in meta.to_units:
            return "wrong-recipient", EXTRA_REASONS["wrong-recipient"]
        refused = self._speaks_for(v, meta.from_unit)
        if refused is not None:
            return refused
        return "ok", v.text

    async def _decide(self, doc: docs_repo.DocRow, rows: list[QueueRow], ex: Examined,
                      replayed: set[str]) -> dict[int, Outcome]:
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
                if prior is not None and prior.state not in ("queued", "held"):
                    results[r.id] = Outcome("ok", 250, "2.0.0", "document already delivered")
                    continue
                reason, text = self._judge(unit, ex, replayed)
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
            results.update(await self._deliver(doc, ex, deliver, serial))
        for _r, unit, reason, text in held:
            await self.s.fire(events.HELD, events.DocumentHeld(doc.id, unit, doc.title,
                                                               doc.from_unit, reason, text))
        # A replay is not news to the sealing unit (and must not let an outsider make
        # it mail that unit once per replayed copy).
        told = [HeldAt(u, reason, text) for _r, u, reason, text in held if reason != "replay"]
        if told:
            try:
                await self._notify_held(doc, ex, told)
            except Exception:  # the verdict is recorded; a lost notice loses no document
                log.exception("held notice for document %d failed", doc.id)
        return results

    def _notice_recipients(self, ex: Examined) -> list[str]:
        """Issue #11 item 8: only whom the verified facts name: the holder of the
        certificate that sealed it, if our CA issued that very certificate (the unit's
        clerks for a seal, the person for a personal certificate). Nobody for mail that
        names a unit only in unsigned header fields (no backscatter)."""
        owner = self._owner(ex.verdict)
        if owner is None:
            return []
        book = self.s.book()
        if owner.kind == "seal" and owner.unit in book.units:
            return book.clerks(owner.unit)
        acct = book.accounts.get(owner.address)
        return [acct.address] if acct is not None and acct.active else []

    async def _notify_held(self, doc: docs_repo.DocRow, ex: Examined,
                           held: list[HeldAt]) -> None:
        """Tell the sealing unit why the document was held (once per receiving unit)."""
        to = self._notice_recipients(ex)
        if not to:
            return
        async with self.s.pool.acquire() as conn:
            told = await docs_repo.events_of_kind(conn, doc.id, "held-notice")
        held = [h for h in held if h.unit not in told]
        if not held:
            return
        verified = ex.is_document
        raw = held_notice(document=doc.id, title=doc.title if verified else ex.outer["Subject"],
                          number=doc.number if verified else "", held=held, to=to,
                          domain=self.s.domain, now=datetime.now(UTC),
                          in_reply_to=doc.header_message_id if verified else None,
                          verified=verified, signer=ex.verdict.signer_email)
        result = await self.s.store_and_deliver(raw, to)
        async with self.s.pool.acquire() as conn:
            for h in held:
                await docs_repo.add_event(conn, "held-notice", f"{h.reason}: told "
                                          f"{', '.join(to)}", doc=doc.id, unit=h.unit,
                                          message_id=result.message_id)
        self.s.metrics.inc("docs_held_notices_total")

    async def _deliver(self, doc: docs_repo.DocRow, ex: Examined,
                       deliver: dict[int, tuple[str, list[str]]],
                       serial: str | None) -> dict[int, Outcome]:
        v = ex.verdict
        assert ex.delivered is not None and ex.meta is not None
        async with self.s.pool.acquire() as conn:
            dup = await docs_repo.number_used(conn, ex.meta.from_unit, ex.meta.number,
                                              ex.meta.doc_id)
        warning = None
        if dup is not None:
            # Issue #11 item 3: delivered, but the clerk sees that the 文号 is not new.
            warning = (f"文号 {ex.meta.number} 已用于公文 #{dup} / the number "
                       f"{ex.meta.number} was already used by document #{dup}")
        copy = stamp(ex.delivered, verdict_value("trusted", doc.id, v), warning)
        to: list[str] = []
        for _unit, clerks in deliver.values():
            to += [c for c in clerks if c not in to]
        result = await self.s.store_and_deliver(copy, to)
        results: dict[int, Outcome] = {}
        async with self.s.pool.acquire() as conn:
            for rid, (unit, clerks) in deliver.items():
                await docs_repo.record_verdict(conn, doc.id, unit, state="delivered",
                                               trusted=True, reason="ok", text=v.text,
                                               signer=v.signer_subject, signer_serial=serial,
                                               delivered_message_id=result.message_id,
                                               clerks=len(clerks), warning=warning)
                if warning:
                    await docs_repo.add_event(conn, "duplicate-number", warning, doc=doc.id,
                                              unit=unit)
                results[rid] = Outcome("ok", 250, "2.0.0",
                                       f"seal verified; delivered to {len(clerks)} clerks")
        for unit, clerks in deliver.values():
            log.info("document %d verified and delivered to %s (%d clerks)", doc.id, unit,
                     len(clerks))
            await self.s.fire(events.ARRIVED, events.DocumentArrived(
                doc.id, doc.doc_id, unit, tuple(clerks), doc.title, doc.number,
                doc.from_unit, doc.urgency, v.signer_email))
        return results
