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

Nothing twice (ARCHITECTURE rule 14, :mod:`mailrelay.documents.lease`): the verdicts,
the verified copy in the clerks' INBOXes and the held notice of one batch are written in
ONE transaction that first locks the queue rows still leased to this node (others are
skipped with a WARNING) and the document's recipient rows. A crash before its COMMIT
leaves nothing behind; after it, the retry finds the unit delivered and delivers
nothing again. Signed mail that is not a document records its copies in
``document_copies`` the same way.
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
from mailrelay.documents.lease import LEASE_LOST, LeaseLost, owned
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
#: A unit without an active clerk cannot sign for anything: the row waits (4xx).
NO_CLERK = Outcome("temp", 450, "4.2.0", "receiving unit has no active clerk")
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


def number_warning(number: str, dup: int | None) -> str | None:
    """The clerk's ``X-CX-Doc-Warning`` when the 文号 was used by document ``dup``."""
    if dup is None:
        return None
    return (f"文号 {number} 已用于公文 #{dup} / the number "
            f"{number} was already used by document #{dup}")


class Inbound(Replies):
    """Verify, record, deliver or hold; one instance per process."""

    def __init__(self, service: DocumentService) -> None:
        self.s = service

    async def handle(self, rows: Sequence[QueueRow], owner: str) -> dict[int, Outcome]:
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
        done = await asyncio.gather(*(self._message(mid, g, owner)
                                      for mid, g in groups.items()),
                                    return_exceptions=True)
        for (mid, group), res in zip(groups.items(), done, strict=True):
            if isinstance(res, BaseException):
                log.error("document message %d failed: %r", mid, res)
                res = {r.id: Outcome("temp", 451, "4.3.0", "document check failed")
                       for r in group}
            results.update(res)
        return results

    async def _message(self, mid: int, rows: list[QueueRow],
                       owner: str) -> dict[int, Outcome]:
        async with self.s.pool.acquire() as conn:
            raw = await queue_repo.message_raw(conn, mid)
        if is_receipt(raw):
            return await self._receipt(mid, raw, rows, owner)
        if is_mdn(raw):
            return await self._clerk_mdn(raw, rows, owner)
        trust = self.s.trust
        now = datetime.now(UTC)
        ex = await self.s.run(examine, raw, trust.anchors, now, trust.revocation, trust.cache,
                              trust.issued)
        self.s.metrics.inc("docs_verified_total", len(rows), trusted=str(ex.verdict.trusted))
        if ex.verdict.reason == "not-signed" and is_authenticated_submission(raw,
                                                                             rows[0].queue_id):
            return await self._clerk_submission(raw, rows, owner)
        ex = self._account_state(ex)
        await self.s.at("verified")
        if ex.verdict.trusted and ex.meta is None:
            return await self._signed_mail(mid, rows, ex, owner)
        try:
            doc, replayed = await self._document(mid, raw, rows, ex, owner)
        except LeaseLost:
            await self.s.at("recorded")
            return {r.id: LEASE_LOST for r in rows}
        return await self._decide(doc, rows, ex, replayed, owner)

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
    async def _signed_mail(self, mid: int, rows: list[QueueRow], ex: Examined,
                           owner: str) -> dict[int, Outcome]:
        """Issue #11 item 2: validly signed, not a cx document: delivered as signed mail
        (a "signed" stamp, not "trusted"), never registered as a document. The copy and
        its record in ``document_copies`` commit together (nothing twice)."""
        assert ex.delivered is not None
        book = self.s.book()
        results: dict[int, Outcome] = {r.id: LEASE_LOST for r in rows}
        to: list[str] = []
        async with owned(self.s.pool, rows, owner) as (conn, mine):
            done = await docs_repo.copies_done(conn, mid, [unit_of(r.recipient) for r in mine])
            units: list[str] = []
            for r in mine:
                unit = unit_of(r.recipient)
                if unit in done:
                    results[r.id] = Outcome("ok", 250, "2.0.0", "signed mail already delivered")
                    continue
                clerks = book.clerks(unit)
                if not clerks:
                    results[r.id] = NO_CLERK
                    continue
                units.append(unit)
                to += [c for c in clerks if c not in to]
                results[r.id] = Outcome("ok", 250, "2.0.0",
                                        "signature verified; delivered as signed mail")
            if to:
                value = verdict_value("signed", None, ex.verdict) + "; not-a-document"
                result = await self.s.store_and_deliver_in(conn, stamp(ex.delivered, value), to)
                await self.s.at("copy-stored")
                await docs_repo.record_copies(conn, mid, sorted(set(units)), result.message_id)
        if to:
            log.info("signed mail from %s delivered to %d clerks (not a document)",
                     ex.verdict.signer_email, len(to))
        await self.s.at("recorded")
        return results

    # ---- documents -------------------------------------------------------------------
    async def _document(self, mid: int, raw: bytes, rows: list[QueueRow], ex: Examined,
                        owner: str) -> tuple[docs_repo.DocRow, set[str]]:
        """Our tracking row (the one `doc send` made, or a new one for an arrival) and
        the receiving units that already have this document (replays); written only
        while one of the rows is still leased to us (else :class:`LeaseLost`)."""
        qid = rows[0].queue_id
        meta = ex.meta if ex.is_document else None
        async with owned(self.s.pool, rows, owner) as (conn, mine):
            if not mine:
                raise LeaseLost(f"message {mid}")
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
        async with conn.transaction():  # a savepoint inside the caller's transaction
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
                      replayed: set[str], owner: str) -> dict[int, Outcome]:
        """One transaction under the queue lease and the recipient rows' locks: the held
        verdicts, the verified copy with its delivered verdicts, the held notice."""
        book = self.s.book()
        v = ex.verdict
        serial = f"{v.signer_serial:x}" if v.signer_serial is not None else None
        results: dict[int, Outcome] = {r.id: LEASE_LOST for r in rows}
        deliver: dict[int, tuple[str, list[str]]] = {}  # row id -> (unit, clerks)
        held: list[tuple[QueueRow, str, str, str]] = []
        warning = await self._number_warning(ex) if v.trusted and ex.meta else None
        async with owned(self.s.pool, rows, owner) as (conn, mine):
            states = await docs_repo.lock_recipients(conn, doc.id,
                                                     sorted({unit_of(r.recipient) for r in mine}))
            for r in mine:
                unit = unit_of(r.recipient)
                prior = states.get(unit)
                if prior is not None and prior not in ("queued", "held"):
                    results[r.id] = Outcome("ok", 250, "2.0.0", "document already delivered")
                    continue
                reason, text = self._judge(unit, ex, replayed)
                if reason != "ok":
                    held.append((r, unit, reason, text))
                    continue
                clerks = book.clerks(unit)
                if not clerks:
                    results[r.id] = NO_CLERK
                    continue
                deliver[r.id] = (unit, clerks)
            for r, unit, reason, text in held:
                await docs_repo.record_verdict(conn, doc.id, unit, state="held", trusted=False,
                                               reason=reason, text=text,
                                               signer=v.signer_subject, signer_serial=serial)
                results[r.id] = Outcome("ok", 250, "2.0.0", f"document held: {reason}")
            if deliver:
                results.update(await self._deliver(conn, doc, ex, deliver, serial, warning))
            # A replay is not news to the sealing unit (and must not let an outsider make
            # it mail that unit once per replayed copy).
            told = [HeldAt(u, reason, text) for _r, u, reason, text in held
                    if reason != "replay"]
            if told:
                try:
                    async with conn.transaction():  # a savepoint: the verdicts stay
                        await self._notify_held(conn, doc, ex, told)
                except Exception:  # the verdict is recorded; a lost notice loses no document
                    log.exception("held notice for document %d failed", doc.id)
        await self.s.at("recorded")
        for _r, unit, reason, text in held:
            log.warning("document %d for %s held: %s (%s)", doc.id, unit, reason, text)
            await self.s.fire(events.HELD, events.DocumentHeld(doc.id, unit, doc.title,
                                                               doc.from_unit, reason, text))
        for unit, clerks in deliver.values():
            log.info("document %d verified and delivered to %s (%d clerks)", doc.id, unit,
                     len(clerks))
            await self.s.fire(events.ARRIVED, events.DocumentArrived(
                doc.id, doc.doc_id, unit, tuple(clerks), doc.title, doc.number,
                doc.from_unit, doc.urgency, v.signer_email))
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

    async def _notify_held(self, conn: Any, doc: docs_repo.DocRow, ex: Examined,
                           held: list[HeldAt]) -> None:
        """Tell the sealing unit why the document was held (once per receiving unit: the
        notice and its event commit together, in the caller's transaction)."""
        to = self._notice_recipients(ex)
        if not to:
            return
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
        result = await self.s.store_and_deliver_in(conn, raw, to)
        for h in held:
            await docs_repo.add_event(conn, "held-notice", f"{h.reason}: told "
                                      f"{', '.join(to)}", doc=doc.id, unit=h.unit,
                                      message_id=result.message_id)
        self.s.metrics.inc("docs_held_notices_total")

    async def _number_warning(self, ex: Examined) -> str | None:
        """Issue #11 item 3: delivered, but the clerk sees that the 文号 is not new."""
        assert ex.meta is not None
        async with self.s.pool.acquire() as conn:
            dup = await docs_repo.number_used(conn, ex.meta.from_unit, ex.meta.number,
                                              ex.meta.doc_id)
        return number_warning(ex.meta.number, dup)

    async def _deliver(self, conn: Any, doc: docs_repo.DocRow, ex: Examined,
                       deliver: dict[int, tuple[str, list[str]]], serial: str | None,
                       warning: str | None) -> dict[int, Outcome]:
        """The verified copy and the units' delivered verdicts, in the caller's
        transaction: both commit, or neither (a retry then delivers it once)."""
        v = ex.verdict
        assert ex.delivered is not None and ex.meta is not None
        copy = stamp(ex.delivered, verdict_value("trusted", doc.id, v), warning)
        to: list[str] = []
        for _unit, clerks in deliver.values():
            to += [c for c in clerks if c not in to]
        result = await self.s.store_and_deliver_in(conn, copy, to)
        await self.s.at("copy-stored")
        # One statement for every unit of the batch (a circular: up to every unit).
        per_unit = {u: len(c) for u, c in deliver.values()}  # one row per unit
        units = list(per_unit)
        await docs_repo.record_verdicts(conn, doc.id, units, list(per_unit.values()),
                                        state="delivered", trusted=True, reason="ok",
                                        text=v.text, signer=v.signer_subject,
                                        signer_serial=serial,
                                        delivered_message_id=result.message_id,
                                        warning=warning)
        if warning:
            await docs_repo.add_events(conn, "duplicate-number", warning, doc=doc.id,
                                       units=units)
        return {rid: Outcome("ok", 250, "2.0.0",
                             f"seal verified; delivered to {len(clerks)} clerks")
                for rid, (_unit, clerks) in deliver.items()}
