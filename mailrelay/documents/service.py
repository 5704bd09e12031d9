"""Official documents as a service: send (seal once, queue to each unit), receipts,
tracking. The CLI (`cxgw doc ...`) and the server (docs handler, clerk submissions)
share it.

A document goes to ``<unit>.docs@<domain>`` of each receiving unit through the ordinary
submission stage (source "docs"); the scheduler hands those queue rows to
:meth:`DocumentService.handle` (see :mod:`mailrelay.documents.inbound`).
"""

from __future__ import annotations

import asyncio
import functools
import getpass
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg

from cxkernel.errors import Conflict, Invalid, NotFound
from cxkernel.events import EventBus
from cxkernel.metrics import Metrics
from directory.ca import unit_docs_address
from directory.certs import CertificateService
from mailrelay.addressbook import AddressBook
from mailrelay.documents import events, repo
from mailrelay.documents.docmime import Attachment, DocumentMeta
from mailrelay.documents.inbound import Inbound
from mailrelay.documents.lease import LeaseLost
from mailrelay.documents.mailform import parse_classification, parse_urgency
from mailrelay.documents.notice import revoked_notice
from mailrelay.documents.ownsend import OwnDelivery, Verified
from mailrelay.documents.receipt import ReceiptRequest, seal_receipt
from mailrelay.documents.seal import Signer, seal_prepared
from mailrelay.documents.sealpool import Sealed, SealPool
from mailrelay.documents.trust import TrustStore
from mailrelay.queue import repo as queue_repo
from mailrelay.queue.repo import QueueRow, message_raw
from mailrelay.queue.scheduler import Outcome
from mailrelay.submit import ClientInfo, Submission, SubmitResult, Submitter

log = logging.getLogger("cxgw.docs")
T = TypeVar("T")
NAME_TTL = 60.0
LOCAL = ClientInfo(protocol="LOCAL")  # Received: ... with LOCAL (see mailform)


@dataclass(frozen=True)
class SentDocument:
    id: int
    doc_id: str
    queue_id: str
    units: tuple[str, ...]
    size: int

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "doc_id": self.doc_id, "queue_id": self.queue_id,
                "units": list(self.units), "size": self.size}


def overall_state(states: Sequence[str]) -> str:
    """One word for a document: revoked-after-delivery > held > queued > delivered > signed."""
    if not states:
        return "queued"
    for s in ("revoked-after-delivery", "held", "queued", "delivered"):
        if s in states:
            return s
    return "signed"


def reason_summary(states: Sequence[str], reasons: Sequence[str]) -> str:
    """The `reason` of `doc list`: the reasons of the units where it is not trusted
    (comma-separated), "ok" when trusted everywhere, "" while pending."""
    bad = sorted({r for s, r in zip(states, reasons, strict=True)
                  if s in ("held", "revoked-after-delivery")})
    if bad:
        return ",".join(bad)
    return "ok" if reasons and all(r == "ok" for r in reasons) else ""


def verdict_summary(states: Sequence[str], reasons: Sequence[str]) -> str:
    bad = sorted({r for s, r in zip(states, reasons, strict=True)
                  if s in ("held", "revoked-after-delivery")})
    if bad:
        return "untrusted: " + ",".join(bad)
    if any(r == "ok" for r in reasons):
        return "trusted" if all(r == "ok" for r in reasons) else "trusted (partly pending)"
    return "pending"


def _iso(v: datetime | None) -> str | None:
    return v.isoformat() if v else None


class DocumentService:
    def __init__(self, pool: asyncpg.Pool, certs: CertificateService, submitter: Submitter,
                 book: Callable[[], AddressBook], domain: str, *, bus: EventBus | None = None,
                 metrics: Metrics | None = None, executor: Executor | None = None,
                 seal_workers: int | None = None, deliver_inline: bool = True) -> None:
        self.pool = pool
        self.certs = certs
        self.submitter = submitter
        self.book = book
        self.domain = domain.lower()
        self.bus = bus
        self.metrics = metrics or Metrics()
        self.executor = executor  # a thread pool: key objects do not pickle
        # Issue #17 item 4: documents are sealed in worker processes (signing holds the
        # GIL) when they overlap; None = one per CPU, 0 = always in ``executor``.
        self.sealer: SealPool | None = None if seal_workers == 0 else SealPool(seal_workers)
        self._sealing = 0  # documents being sealed now
        self.sealed_in_pool = 0
        # Issue #17 item 4: a document to our own units is verified and delivered in
        # its sending transaction (one stored copy, no queue hop); False: always queued
        # to the docs handler (tests of the handler, benchmarks comparing both paths).
        self.deliver_inline = deliver_inline
        self.trust = TrustStore(certs)
        self.inbound = Inbound(self)
        self.own = OwnDelivery(self)
        self._names: dict[str, tuple[float, str | None]] = {}
        self._signers: dict[str, tuple[int, Signer]] = {}
        self.fault: Callable[[str], Awaitable[None]] | None = None  # tests: see at()

    async def run(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run CPU-bound work (sign, verify, parse) off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kw))

    async def fire(self, name: str, event: object) -> None:
        if self.bus is None:
            return
        try:
            await self.bus.fire(name, event)
        except Exception:  # a subscriber's bug never loses a document
            log.exception("event %s handler failed", name)

    async def handle(self, rows: Sequence[QueueRow], owner: str) -> dict[int, Outcome]:
        """The scheduler's docs handler: ``owner`` is the lease owner (the node id); only
        rows still leased to it are acted on."""
        return await self.inbound.handle(rows, owner)

    async def at(self, point: str) -> None:
        """A named point between two steps of handling a document, where tests inject a
        fault (``fault``: an async callable raising there, as a crash would)."""
        if self.fault is not None:
            await self.fault(point)

    async def store_and_deliver(self, raw: bytes, to: Sequence[str]) -> SubmitResult:
        """Issue #11 item 10: verified copies, held notices and receipt copies go to local
        mailboxes through the one submission stage (Received:, metrics, inline local
        delivery in the same commit as the message), with the null sender: an internal
        copy never bounces into a document inbox."""
        return await self.submitter.submit(Submission("", list(to), raw, LOCAL, "docs"))

    async def store_and_deliver_in(self, conn: Any, raw: bytes,
                                   to: Sequence[str]) -> SubmitResult:
        """:meth:`store_and_deliver` inside the caller's transaction: the copy commits
        with the verdict that records it, or not at all (nothing twice after a crash)."""
        return await self.submitter.submit_in(conn, Submission("", list(to), raw, LOCAL,
                                                               "docs"))

    # ---- revocation after the fact (issue #11 item 6) ----------------------------------
    async def revoked_after_delivery(self, serial: str,
                                     since: datetime | None) -> list[tuple[int, str]]:
        """Documents sealed with ``serial`` (since the compromise date, or all) are no
        longer trusted; the clerks are told by :meth:`notify_revoked` (in the server)."""
        text = (f"the seal {serial} was revoked for key compromise"
                + (f" (compromised since {since.isoformat()})" if since else "")
                + " after this document was delivered")
        async with self.pool.acquire() as conn, conn.transaction():
            changed = await repo.revoke_after_delivery(conn, serial, since, text)
            for doc, unit in changed:
                await repo.add_event(conn, "revoked-after-delivery", text, doc=doc, unit=unit)
            if changed:  # every node's server re-runs notify_revoked once this commits
                await repo.notify_certificates_changed(conn)
        if changed:
            log.warning("%d delivered documents sealed by %s are no longer trusted",
                        len(changed), serial)
        return changed

    async def count_revoked_after_delivery(self, serial: str) -> int:
        async with self.pool.acquire() as conn:
            return await repo.count_revoked_after_delivery(conn, serial)

    async def reexamine_compromised(self) -> int:
        """Apply every key-compromise revocation to the documents it sealed (idempotent),
        then tell the clerks of what changed. Run by the server at start and whenever a
        certificate changes, so a revocation from the CLI reaches mail and XMPP."""
        for cert in await self.certs.compromised():
            await self.revoked_after_delivery(cert[0], cert[1])
        return await self.notify_revoked()

    async def notify_revoked(self) -> int:
        """A notice (mail, and an event for XMPP) to the clerks of each unit that holds a
        document revoked after delivery; each (document, unit) is claimed once."""
        book = self.book()
        told: list[events.DocumentRevokedAfterDelivery] = []
        # The claim and the notices commit together: a crash in between neither loses
        # a notice (the claim rolls back) nor sends one twice.
        async with self.pool.acquire() as conn, conn.transaction():
            pairs = await repo.claim_revoked_notices(conn)
            docs = {d: await repo.get(conn, d) for d in {p[0] for p in pairs}}
            for doc_pk, unit, serial in pairs:
                doc = docs[doc_pk]
                clerks = book.clerks(unit)
                if doc is None or not clerks:
                    continue
                raw = revoked_notice(document=doc.id, title=doc.title, number=doc.number,
                                     from_unit=doc.from_unit, unit=unit, to=clerks,
                                     domain=self.domain, now=datetime.now(UTC),
                                     in_reply_to=doc.header_message_id)
                await self.store_and_deliver_in(conn, raw, clerks)
                told.append(events.DocumentRevokedAfterDelivery(
                    doc.id, unit, tuple(clerks), doc.title, doc.number, doc.from_unit,
                    serial))
        for event in told:  # XMPP notices of online clerks: after COMMIT
            await self.fire(events.REVOKED, event)
        return len(pairs)

    def docs_address(self, unit: str) -> str:
        return unit_docs_address(unit, self.domain)

    # ---- sending ---------------------------------------------------------------------
    def resolve_units(self, from_unit: str, to: Sequence[str]) -> list[str]:
        units = self.book().units
        if from_unit not in units:
            raise NotFound(f"unknown unit {from_unit!r}")
        wanted = [u.strip().lower() for u in to if u.strip()]
        if "all" in wanted:  # a circular: every unit, the issuing one keeps its copy too
            return sorted(units)
        unknown = [u for u in wanted if u not in units]
        if unknown:
            raise NotFound(f"unknown unit {', '.join(unknown)}")
        out = sorted(set(wanted))
        if not out:
            raise Invalid("no receiving unit")
        return out

    async def signer(self, unit: str, rev: int | None = None) -> Signer:
        """The unit's current seal. Kept per unit while the CA revision (bumped by every
        issue and revocation) stays the same: one tiny query per document, so a seal
        issued or revoked a moment ago is still honoured at once (``rev``: that
        revision, when the caller has just read it)."""
        if rev is None or rev < 0:
            rev = await self.certs.revision()
        cached = self._signers.get(unit)
        if cached is not None and cached[0] == rev:
            return cached[1]
        seal = await self.certs.seal_key(unit)
        signer = Signer(seal.key, seal.certificate, (seal.ca_certificate,))
        self._signers[unit] = (rev, signer)
        return signer

    async def _unit_name(self, unit: str) -> str | None:
        now = time.monotonic()
        cached = self._names.get(unit)
        if cached is not None and now - cached[0] < NAME_TTL:
            return cached[1]
        async with self.pool.acquire() as conn:
            value: Any = await conn.fetchval("select name from units where code = $1", unit)
        self._names[unit] = (now, value)
        return value

    async def send(self, *, from_unit: str, to: Sequence[str], title: str, number: str,
                   attachments: Sequence[Attachment], note: str = "", urgency: str = "normal",
                   classification: str = "internal", origin: str = "cli",
                   sent_by: str | None = None,
                   source: tuple[int, str, int] | None = None) -> SentDocument:
        """Build the document, seal it once with the unit's seal, queue it to every unit.

        ``source`` = (queued message id, lease owner, queue row id) of a clerk's mail
        submission: the document is recorded and queued in ONE transaction, under that
        queue row's lease (else :class:`LeaseLost`), and once per source message (a
        retry after a crash returns the document already sent)."""
        from_unit = from_unit.strip().lower()
        units = self.resolve_units(from_unit, to)
        title = " ".join(title.split())
        if not title or not number.strip():
            raise Invalid("a document needs a title and a number (文号)")
        rev = None
        if self.deliver_inline:
            # The verifier's view of the CA, read once for both: its revision is the
            # one the seal is cached under.
            await self._refresh_trust()
            rev = self.trust.revision
        signer = await self.signer(from_unit, rev)
        meta = DocumentMeta(doc_id=DocumentMeta.new_id(), number=number.strip(), title=title,
                            from_unit=from_unit, to_units=tuple(units),
                            urgency=parse_urgency(urgency),
                            classification=parse_classification(classification),
                            from_unit_name=await self._unit_name(from_unit))
        sender = self.docs_address(from_unit)
        rcpts = [self.docs_address(u) for u in units]
        # One job: build the MIME document, sign it, wrap it (no re-parsing).
        sealed = await self._seal(meta, note, attachments, signer, sender, rcpts)
        raw = sealed.raw
        verified = await self.own.verify(raw, units) if self.deliver_inline else None
        if source is not None:
            return await self._send_once(source, meta, units, sender, rcpts, raw,
                                         sealed.message_id, sealed.digest, origin, sent_by,
                                         verified)
        if verified is not None:
            ready = await self.own.prepare(meta, verified, sender=sender,
                                           header_message_id=sealed.message_id,
                                           digest=sealed.digest, origin=origin,
                                           sent_by=sent_by)
            result = await self.own.commit(ready)  # group commit with concurrent sends
            await self.own.announce(ready, result)
            return SentDocument(ready.row.id, meta.doc_id, result.queue_id,
                                tuple(verified.clerks), len(raw))
        async with self.pool.acquire() as conn:
            # The submission's durable commit right after flushes this row's WAL too.
            doc = await repo.insert_document(
                conn, doc_id=meta.doc_id, title=title, number=meta.number, from_unit=from_unit,
                from_name=meta.from_unit_name, sender=sender, urgency=meta.urgency.value,
                classification=meta.classification.value, origin=origin, sent_by=sent_by,
                header_message_id=sealed.message_id, units=units,
                digest=sealed.digest, digest_algorithm="sha256", flushed_by_next_commit=True)
        try:
            result = await self.submitter.submit(Submission(sender, rcpts, raw, LOCAL, "docs"))
        except BaseException:
            async with self.pool.acquire() as conn:
                await conn.execute("delete from documents where id = $1", doc)
            raise
        async with self.pool.acquire() as conn:
            await repo.set_queued(conn, doc, result.message_id, result.queue_id, lazy=True)
        self.metrics.inc("docs_sent_total", origin=origin)
        log.info("document %d (%s) sealed by %s and queued to %d units as %s", doc,
                 meta.doc_id, from_unit, len(units), result.queue_id)
        return SentDocument(doc, meta.doc_id, result.queue_id, tuple(units), len(raw))

    async def _seal(self, meta: DocumentMeta, note: str, attachments: Sequence[Attachment],
                    signer: Signer, sender: str, rcpts: list[str]) -> Sealed:
        """Seal one document. A lone document is sealed in ``executor`` (no pipe, and a
        one-off CLI run starts no processes); while another is being sealed, in the
        process pool, so concurrent documents do not queue behind one GIL."""
        overlap = self._sealing > 0
        self._sealing += 1
        try:
            if self.sealer is not None and overlap:
                self.sealed_in_pool += 1
                return await self.sealer.seal(meta, note, attachments, signer,
                                              from_addr=sender, to_addrs=rcpts,
                                              now=datetime.now(UTC), domain=self.domain)
            done = await self.run(seal_prepared, meta, note, list(attachments), signer,
                                  from_addr=sender, to_addrs=rcpts, now=datetime.now(UTC),
                                  domain=self.domain)
            return Sealed(done.raw, done.prepared.envelope.message_id, done.digest)
        finally:
            self._sealing -= 1

    def close(self) -> None:
        """Stop the sealing processes (the server's stop; they also end with us)."""
        if self.sealer is not None:
            self.sealer.close()

    async def _send_once(self, source: tuple[int, str, int], meta: DocumentMeta,
                         units: list[str], sender: str, rcpts: list[str], raw: bytes,
                         header_message_id: str | None, digest: bytes, origin: str,
                         sent_by: str | None, verified: Verified | None = None) -> SentDocument:
        src, owner, row = source
        ready = None
        if verified is not None:
            ready = await self.own.prepare(meta, verified, sender=sender,
                                           header_message_id=header_message_id,
                                           digest=digest, origin=origin, sent_by=sent_by,
                                           source_message_id=src)
        async with self.pool.acquire() as conn, conn.transaction():
            if not await queue_repo.lock_owned(conn, owner, [row]):
                log.warning("lease lost on queue row %d: the clerk's submission is left to"
                            " the node that owns it now", row)
                raise LeaseLost(f"queue row {row}")
            prior = await repo.by_source(conn, src)
            if prior is not None:
                log.info("document %d was already sent from message %d", prior.id, src)
                return SentDocument(prior.id, prior.doc_id, prior.queue_id or "",
                                    tuple(units), len(raw))
            if ready is not None:  # under the row's lease, in this transaction
                result = (await self.own.write(conn, [ready]))[0]
            else:
                doc = await repo.insert_document(
                    conn, doc_id=meta.doc_id, title=meta.title, number=meta.number,
                    from_unit=meta.from_unit, from_name=meta.from_unit_name, sender=sender,
                    urgency=meta.urgency.value, classification=meta.classification.value,
                    origin=origin, sent_by=sent_by, header_message_id=header_message_id,
                    units=units, digest=digest, digest_algorithm="sha256",
                    source_message_id=src)
                result = await self.submitter.submit_in(
                    conn, Submission(sender, rcpts, raw, LOCAL, "docs"))
                await repo.set_queued(conn, doc, result.message_id, result.queue_id)
        if ready is not None:
            await self.own.announce(ready, result)
            return SentDocument(ready.row.id, meta.doc_id, result.queue_id,
                                tuple(ready.verified.clerks), len(raw))
        self.metrics.inc("docs_sent_total", origin=origin)
        log.info("document %d (%s) sealed by %s and queued to %d units as %s", doc,
                 meta.doc_id, meta.from_unit, len(units), result.queue_id)
        return SentDocument(doc, meta.doc_id, result.queue_id, tuple(units), len(raw))

    # ---- verified and delivered in the sending transaction (issue #17 item 4) ----------
    async def _refresh_trust(self) -> None:
        """The docs handler's refresh: a changed CA (perhaps a key-compromise revocation
        whose NOTIFY this process missed) re-examines delivered documents too."""
        if await self.trust.refresh():
            try:
                await self.reexamine_compromised()
            except Exception:
                log.exception("re-examining documents after a revocation failed")

    # ---- lookup ----------------------------------------------------------------------
    async def _get(self, ident: str) -> repo.DocRow:
        async with self.pool.acquire() as conn:
            doc = await repo.find(conn, ident.strip())
        if doc is None:
            raise NotFound(f"no document {ident!r}")
        return doc

    # ---- receipts (签收) -------------------------------------------------------------
    async def receipt(self, ident: str, *, by: str | None = None, unit: str | None = None,
                      lease: tuple[str, int] | None = None) -> dict[str, Any]:
        """Seal a receipt with the receiving unit's seal and send it to the sender's inbox.

        The receipt is queued and marked sent in one transaction, under the lock of the
        recipient row (and, with ``lease`` = (owner, queue row id) for a clerk's read
        receipt, of that queue row while still leased to ``owner``, else
        :class:`LeaseLost`): one receipt per unit, even after a crash or from two
        processes at once."""
        doc = await self._get(ident)
        book = self.book()
        who = by.strip().lower() if by else f"cli:{getpass.getuser()}"
        if by and "@" not in who:
            who = f"{who}@{self.domain}"
        if by:
            acct = book.accounts.get(who)
            if acct is None or not acct.active or "clerk" not in acct.roles:
                raise Invalid(f"{who} is not an active clerk")
            if unit and unit != acct.unit:
                raise Invalid(f"{who} is not a clerk of {unit}")
            unit = acct.unit
        async with self.pool.acquire() as conn:
            rows = await repo.recipients(conn, doc.id)
        if unit is None:
            delivered = [r for r in rows if r.state == "delivered"]
            if len(delivered) != 1:
                raise Invalid("say which receiving unit signs for it (--by or --unit)")
            unit = delivered[0].unit
        rcpt = next((r for r in rows if r.unit == unit), None)
        if rcpt is None:
            raise NotFound(f"document {doc.id} was not sent to {unit}")
        if rcpt.state == "signed" or rcpt.receipt_sent_at is not None:
            raise Conflict(f"{unit} already signed for document {doc.id}")
        if rcpt.state != "delivered" or not doc.digest or not doc.header_message_id:
            raise Conflict(f"document {doc.id} is {rcpt.state} at {unit}: only a verified,"
                           " delivered document can be signed for")
        original_sender = (self.docs_address(doc.from_unit)
                           if doc.from_unit in book.units else doc.sender)
        req = ReceiptRequest(doc.header_message_id, original_sender, doc.doc_id, doc.title,
                             doc.number, doc.digest, doc.digest_algorithm or "sha256")
        signer = await self.signer(unit)
        receiver = self.docs_address(unit)
        unit_name = await self._unit_name(unit) or unit
        raw = await self.run(seal_receipt, req, signer, receiver=receiver,
                             receiver_unit=f"{unit_name}（{who}）", now=datetime.now(UTC),
                             domain=self.domain, receiver_name=unit_name)
        local = doc.from_unit in book.units
        async with self.pool.acquire() as conn, conn.transaction():
            if lease is not None and not await queue_repo.lock_owned(conn, lease[0],
                                                                     [lease[1]]):
                log.warning("lease lost on queue row %d: the read receipt is left to the"
                            " node that owns it now", lease[1])
                raise LeaseLost(f"queue row {lease[1]}")
            now = await repo.recipient_for_update(conn, doc.id, unit)
            if now is None or now.state == "signed" or now.receipt_sent_at is not None:
                raise Conflict(f"{unit} already signed for document {doc.id}")
            result = await self.submitter.submit_in(
                conn, Submission(receiver, [original_sender], raw, LOCAL, "docs"))
            await self.at("receipt-queued")
            # A receipt to another organisation never comes back here: signed when sent.
            await repo.mark_receipt_sent(conn, doc.id, unit, who, signed=not local)
        log.info("receipt for document %d sent by %s (%s) as %s", doc.id, unit, who,
                 result.queue_id)
        return {"id": doc.id, "unit": unit, "by": who, "to": original_sender,
                "queue_id": result.queue_id}

    # ---- tracking --------------------------------------------------------------------
    async def status(self, ident: str) -> dict[str, Any]:
        doc = await self._get(ident)
        async with self.pool.acquire() as conn:
            rows = await repo.recipients(conn, doc.id)
            evs = await repo.events(conn, doc.id)
        return {
            "id": doc.id, "doc_id": doc.doc_id, "title": doc.title, "number": doc.number,
            "from": doc.from_unit, "origin": doc.origin, "sent_by": doc.sent_by,
            "urgency": doc.urgency, "created_at": doc.created_at.isoformat(),
            "state": overall_state([r.state for r in rows]),
            "recipients": [{
                "unit": r.unit, "state": r.state,
                "verdict": ("trusted" if r.trusted else "untrusted" if r.trusted is False
                            else None),
                "reason": r.reason, "reason_text": r.reason_text, "signer": r.signer,
                "warning": r.warning,
                "verified_at": _iso(r.verified_at), "delivered_at": _iso(r.delivered_at),
                "clerks": r.clerks, "signed_at": _iso(r.signed_at), "signed_by": r.signed_by,
                "receipt_sent_at": _iso(r.receipt_sent_at),
            } for r in rows],
            "events": evs,
        }

    async def list(self, *, unit: str | None = None, state: str | None = None,
                   limit: int = 500) -> list[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            found = await repo.list_documents(conn, unit, state, limit)
        return [{"id": d.id, "title": d.title, "number": d.number, "from": d.from_unit,
                 "units": units, "state": overall_state(states),
                 "verdict": verdict_summary(states, reasons),
                 "reason": reason_summary(states, reasons), "origin": d.origin,
                 "doc_id": d.doc_id, "created_at": d.created_at.isoformat()}
                for d, units, states, reasons in found]

    async def raw(self, ident: str, unit: str | None = None) -> bytes:
        """The message exactly as delivered to ``unit`` (or as received, when held)."""
        doc = await self._get(ident)
        async with self.pool.acquire() as conn:
            rows = await repo.recipients(conn, doc.id)
            if unit is not None:
                rows = [r for r in rows if r.unit == unit]
                if not rows:
                    raise NotFound(f"document {doc.id} was not sent to {unit}")
            delivered = [r.delivered_message_id for r in rows if r.delivered_message_id]
            mid = delivered[0] if delivered else doc.message_id
            if mid is None:
                raise NotFound(f"document {doc.id} has no stored message yet")
            return await message_raw(conn, mid)
