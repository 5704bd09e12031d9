"""Document tracking persistence: the only SQL of official documents.

A `documents` row is one sealed message; `document_recipients` holds, per receiving
unit, the state (queued, delivered, held, signed), the verdict and the receipt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

# asyncpg.Connection or a pool's PoolConnectionProxy: the union is not valid as a
# type (the proxy is not a Connection subclass), and asyncpg ships no stubs.
Conn: TypeAlias = Any


@dataclass(frozen=True)
class DocRow:
    id: int
    doc_id: str
    title: str
    number: str
    from_unit: str
    from_name: str | None
    sender: str
    urgency: str
    classification: str
    origin: str
    sent_by: str | None
    header_message_id: str | None
    message_id: int | None
    queue_id: str | None
    digest: bytes | None
    digest_algorithm: str | None
    created_at: datetime


@dataclass(frozen=True)
class RecipientRow:
    document_id: int
    unit: str
    state: str
    trusted: bool | None
    reason: str | None
    reason_text: str | None
    signer: str | None
    signer_serial: str | None
    verified_at: datetime | None
    delivered_at: datetime | None
    delivered_message_id: int | None
    clerks: int
    receipt_by: str | None
    receipt_sent_at: datetime | None
    signed_at: datetime | None
    signed_by: str | None
    receipt_message_id: int | None
    updated_at: datetime
    warning: str | None = None


DOC_COLUMNS = ("id, doc_id, title, number, from_unit, from_name, sender, urgency, classification,"
               " origin, sent_by, header_message_id, message_id, queue_id, digest,"
               " digest_algorithm, created_at")
RCPT_COLUMNS = ("document_id, unit, state, trusted, reason, reason_text, signer, signer_serial,"
                " verified_at, delivered_at, delivered_message_id, clerks, receipt_by,"
                " receipt_sent_at, signed_at, signed_by, receipt_message_id, updated_at, warning")


def _doc(r: asyncpg.Record) -> DocRow:
    values = list(r.values())
    if values[14] is not None:
        values[14] = bytes(values[14])
    return DocRow(*values)


def _rcpt(r: asyncpg.Record) -> RecipientRow:
    return RecipientRow(*r.values())


async def insert_document(conn: Conn, *, doc_id: str, title: str, number: str, from_unit: str,
                          from_name: str | None, sender: str, urgency: str,
                          classification: str, origin: str, sent_by: str | None,
                          header_message_id: str | None, units: Sequence[str],
                          message_id: int | None = None,
                          digest: bytes | None = None, digest_algorithm: str | None = None,
                          flushed_by_next_commit: bool = False,
                          source_message_id: int | None = None) -> int:
    """A document and its recipient rows (state queued), in one statement.

    ``flushed_by_next_commit``: commit without waiting for the WAL flush
    (``synchronous_commit = off``) because the caller's next step is a durable commit
    (the submission) that flushes the WAL up to its own record, and so this one too.
    """
    # The lazy form is one statement (one round trip instead of BEGIN, SET LOCAL,
    # INSERT, COMMIT): set_config(..., true) lasts until the end of this statement's own
    # transaction, so its commit does not wait for the WAL flush.
    lazy = ("with s as (select set_config('synchronous_commit', 'off', true)),"
            if flushed_by_next_commit else "with s as (select 1),")
    sql = (
        lazy + " d as (insert into documents(doc_id, title, number, from_unit, from_name,"
        " sender, urgency, classification, origin, sent_by, header_message_id, message_id,"
        " digest, digest_algorithm, source_message_id) select $1::text, $2::text, $3::text,"
        " $4::text, $5::text, $6::text, $7::text, $8::text, $9::text, $10::text, $11::text,"
        " $12::bigint, $13::bytea, $14::text, $16::bigint from s returning id),"
        " r as (insert into document_recipients(document_id, unit)"
        " select d.id, u from d, unnest($15::text[]) u on conflict do nothing)"
        " select id from d")
    return int(await conn.fetchval(sql, doc_id, title, number, from_unit, from_name, sender,
                                   urgency, classification, origin, sent_by,
                                   header_message_id, message_id, digest, digest_algorithm,
                                   list(units), source_message_id))


async def reserve_document(conn: Conn, from_unit: str, number: str,
                           doc_id: str) -> tuple[int, int | None]:
    """The id of a document about to be sent (its clerks' copy names it before the row
    is written) and, in the same statement, another document of ``from_unit`` with the
    same 文号 delivered somewhere (:func:`number_used`). A reserved id that is never
    written is a gap, nothing more."""
    r = await conn.fetchrow(
        "select nextval(pg_get_serial_sequence('documents', 'id')) as id,"
        " (select x.id from documents x where x.from_unit = $1 and x.number = $2"
        "  and $2 <> '' and x.doc_id <> $3 and exists (select 1 from document_recipients r"
        "  where r.document_id = x.id and r.state <> 'held') order by x.id limit 1) as dup",
        from_unit, number, doc_id)
    return int(r["id"]), (int(r["dup"]) if r["dup"] is not None else None)


@dataclass(frozen=True)
class Delivered:
    """A document sent from here, verified at once and delivered: its row, and per
    receiving unit the clerks' count, under one verdict and one stored copy."""

    id: int  # from reserve_document
    doc_id: str
    title: str
    number: str
    from_unit: str
    from_name: str | None
    sender: str
    urgency: str
    classification: str
    origin: str
    sent_by: str | None
    header_message_id: str | None
    digest: bytes
    source_message_id: int | None
    message_id: int  # the stored copy in the clerks' INBOXes
    queue_id: str
    units: tuple[str, ...]
    clerks: tuple[int, ...]  # per unit
    text: str
    signer: str | None
    signer_serial: str | None
    warning: str | None


async def insert_delivered(conn: Conn, docs: Sequence[Delivered]) -> None:
    """Documents verified while sent: their rows, every unit's delivered verdict and the
    duplicate-number events, for a whole group commit (a circular to every unit
    included) in ONE statement. The recipient rows reference documents inserted by the
    same statement: foreign keys are checked at its end."""
    rows = [(d, u, c) for d in docs for u, c in zip(d.units, d.clerks, strict=True)]
    await conn.execute(
        "with d as (insert into documents(id, doc_id, title, number, from_unit, from_name,"
        "  sender, urgency, classification, origin, sent_by, header_message_id, digest,"
        "  digest_algorithm, source_message_id, message_id, queue_id)"
        "  select x.id, x.doc_id, x.title, x.number, x.from_unit, x.from_name, x.sender,"
        "  x.urgency, x.classification, x.origin, x.sent_by, x.header_message_id, x.digest,"
        "  'sha256', y.s, y.m, y.q from unnest($1::bigint[], $2::text[], $3::text[],"
        "  $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],"
        "  $11::text[], $12::text[], $13::bytea[]) with ordinality as x(id, doc_id, title,"
        "  number, from_unit, from_name, sender, urgency, classification, origin, sent_by,"
        "  header_message_id, digest, k)"
        "  join unnest($14::bigint[], $15::bigint[], $16::text[]) with ordinality"
        "  as y(s, m, q, k) on y.k = x.k),"
        " r as (insert into document_recipients(document_id, unit, state, trusted, reason,"
        "  reason_text, signer, signer_serial, verified_at, delivered_at,"
        "  delivered_message_id, clerks, warning)"
        "  select doc, u, 'delivered', true, 'ok', t, sg, sr, now(), now(), m, c, w"
        "  from unnest($17::bigint[], $18::text[], $19::int[], $20::text[], $21::text[],"
        "  $22::text[], $23::bigint[], $24::text[]) as z(doc, u, c, t, sg, sr, m, w))"
        " insert into document_events(document_id, unit, kind, detail)"
        " select doc, u, 'duplicate-number', w from unnest($17::bigint[], $18::text[],"
        " $24::text[]) as e(doc, u, w) where w is not null",
        [d.id for d in docs], [d.doc_id for d in docs], [d.title for d in docs],
        [d.number for d in docs], [d.from_unit for d in docs], [d.from_name for d in docs],
        [d.sender for d in docs], [d.urgency for d in docs],
        [d.classification for d in docs], [d.origin for d in docs],
        [d.sent_by for d in docs], [d.header_message_id for d in docs],
        [d.digest for d in docs], [d.source_message_id for d in docs],
        [d.message_id for d in docs], [d.queue_id for d in docs],
        [d.id for d, _u, _c in rows], [u for _d, u, _c in rows], [c for _d, _u, c in rows],
        [d.text for d, _u, _c in rows], [d.signer for d, _u, _c in rows],
        [d.signer_serial for d, _u, _c in rows], [d.message_id for d, _u, _c in rows],
        [d.warning for d, _u, _c in rows])


async def set_queued(conn: Conn, doc: int, message_id: int, queue_id: str, *,
                     lazy: bool = False) -> None:
    """Link a document to its queued message. ``lazy``: without waiting for the WAL flush;
    if a crash loses it, the docs handler links the row itself (:func:`local_unqueued`)."""
    if not lazy:
        await conn.execute("update documents set message_id = $2, queue_id = $3"
                           " where id = $1", doc, message_id, queue_id)
        return
    # One statement: its own transaction commits without waiting for the WAL flush.
    await conn.execute("with s as (select set_config('synchronous_commit', 'off', true))"
                       " update documents set message_id = $2, queue_id = $3 from s"
                       " where id = $1", doc, message_id, queue_id)


async def get(conn: Conn, doc: int) -> DocRow | None:
    r = await conn.fetchrow(f"select {DOC_COLUMNS} from documents where id = $1", doc)
    return _doc(r) if r else None


async def find(conn: Conn, ident: str) -> DocRow | None:
    """By numeric id, doc id (uuid, or a unique prefix of at least 8 characters)."""
    if ident.isdigit():
        return await get(conn, int(ident))
    rows = await conn.fetch(f"select {DOC_COLUMNS} from documents where doc_id = $1"
                            " or (length($1) >= 8 and doc_id like $1 || '%') order by id limit 2",
                            ident)
    return _doc(rows[0]) if len(rows) == 1 else None


async def by_message(conn: Conn, message_id: int) -> DocRow | None:
    r = await conn.fetchrow(f"select {DOC_COLUMNS} from documents where message_id = $1",
                            message_id)
    return _doc(r) if r else None


async def by_source(conn: Conn, source_message_id: int) -> DocRow | None:
    """The document made from a clerk's queued message (a mail submission)."""
    r = await conn.fetchrow(f"select {DOC_COLUMNS} from documents where source_message_id = $1",
                            source_message_id)
    return _doc(r) if r else None


async def local_unqueued(conn: Conn, header_message_id: str, doc_id: str) -> DocRow | None:
    """A document sent from here whose queue entry was not linked yet (a fast scheduler)."""
    r = await conn.fetchrow(f"select {DOC_COLUMNS} from documents where header_message_id = $1"
                            " and doc_id = $2 and origin <> 'smtp' and message_id is null"
                            " order by id desc limit 1", header_message_id, doc_id)
    return _doc(r) if r else None


async def for_receipt(conn: Conn, header_message_id: str, from_unit: str) -> DocRow | None:
    r = await conn.fetchrow(f"select {DOC_COLUMNS} from documents where header_message_id = $1"
                            " and from_unit = $2 order by id desc limit 1",
                            header_message_id, from_unit)
    return _doc(r) if r else None


async def delivered_to(conn: Conn, header_message_id: str, from_unit: str,
                       unit: str) -> DocRow | None:
    """The document of ``from_unit`` with that Message-ID delivered (or signed for) at
    ``unit``: what a clerk's read receipt refers to (never a held replay)."""
    r = await conn.fetchrow(
        f"select {', '.join('d.' + c.strip() for c in DOC_COLUMNS.split(','))}"
        " from documents d join document_recipients r on r.document_id = d.id"
        " where d.header_message_id = $1 and d.from_unit = $2 and r.unit = $3"
        " and r.state in ('delivered', 'signed') order by d.id limit 1",
        header_message_id, from_unit, unit)
    return _doc(r) if r else None


async def sent_document(conn: Conn, doc_id: str, from_unit: str) -> DocRow | None:
    """The document ``from_unit`` sent from here with that document id (receipts)."""
    r = await conn.fetchrow(f"select {DOC_COLUMNS} from documents where doc_id = $1"
                            " and from_unit = $2 and origin <> 'smtp' order by id limit 1",
                            doc_id, from_unit)
    return _doc(r) if r else None


async def lock_doc_id(conn: Conn, doc_id: str) -> None:
    """Serialise arrivals of one document id across processes (transaction-scoped)."""
    await conn.execute("select pg_advisory_xact_lock(hashtext('cx-doc:' || $1))", doc_id)


async def units_with_doc_id(conn: Conn, doc_id: str, units: Sequence[str]) -> set[str]:
    """Which of ``units`` already have a document with this id registered (replays)."""
    rows = await conn.fetch("select distinct r.unit from documents d join document_recipients r"
                            " on r.document_id = d.id where d.doc_id = $1"
                            " and r.unit = any($2::text[]) and r.state <> 'held'",
                            doc_id, list(units))
    return {r["unit"] for r in rows}


async def number_used(conn: Conn, from_unit: str, number: str, doc_id: str) -> int | None:
    """Another document of ``from_unit`` with the same 文号, delivered somewhere."""
    if not number:
        return None
    value: Any = await conn.fetchval(
        "select d.id from documents d where d.from_unit = $1 and d.number = $2"
        " and d.doc_id <> $3 and exists (select 1 from document_recipients r"
        " where r.document_id = d.id and r.state <> 'held') order by d.id limit 1",
        from_unit, number, doc_id)
    return int(value) if value is not None else None


async def set_digest(conn: Conn, doc: int, digest: bytes | None, algorithm: str | None) -> None:
    await conn.execute("update documents set digest = coalesce(digest, $2),"
                       " digest_algorithm = coalesce(digest_algorithm, $3) where id = $1",
                       doc, digest, algorithm)


async def recipient(conn: Conn, doc: int, unit: str) -> RecipientRow | None:
    r = await conn.fetchrow(f"select {RCPT_COLUMNS} from document_recipients"
                            " where document_id = $1 and unit = $2", doc, unit)
    return _rcpt(r) if r else None


async def lock_recipients(conn: Conn, doc: int, units: Sequence[str]) -> dict[str, str]:
    """Lock the recipient rows of ``units`` until the transaction ends; unit -> state.
    The delivery of a copy and its verdict are decided under this lock."""
    rows = await conn.fetch("select unit, state from document_recipients"
                            " where document_id = $1 and unit = any($2::text[])"
                            " order by unit for update", doc, list(units))
    return {r["unit"]: r["state"] for r in rows}


async def copies_done(conn: Conn, message_id: int, units: Sequence[str]) -> set[str]:
    """Units whose clerks already got a copy of queued message ``message_id`` (signed
    mail that is not a document: no recipient row records it)."""
    rows = await conn.fetch("select unit from document_copies where message_id = $1"
                            " and unit = any($2::text[])", message_id, list(units))
    return {r["unit"] for r in rows}


async def record_copies(conn: Conn, message_id: int, units: Sequence[str],
                        copy_message_id: int) -> None:
    """Record, in the copy's own transaction, that these units got it (primary key
    (message_id, unit): a second copy cannot be recorded)."""
    await conn.execute("insert into document_copies(message_id, unit, copy_message_id)"
                       " select $1, u, $3 from unnest($2::text[]) u",
                       message_id, list(units), copy_message_id)


async def recipients(conn: Conn, doc: int) -> list[RecipientRow]:
    rows = await conn.fetch(f"select {RCPT_COLUMNS} from document_recipients"
                            " where document_id = $1 order by unit", doc)
    return [_rcpt(r) for r in rows]


async def record_verdict(conn: Conn, doc: int, unit: str, *, state: str, trusted: bool,
                         reason: str, text: str, signer: str | None, signer_serial: str | None,
                         delivered_message_id: int | None = None, clerks: int = 0,
                         warning: str | None = None) -> None:
    """Store the verdict for one receiving unit (and its delivery when trusted)."""
    await conn.execute(
        "insert into document_recipients(document_id, unit, state, trusted, reason, reason_text,"
        " signer, signer_serial, verified_at, delivered_at, delivered_message_id, clerks,"
        " warning) values ($1, $2, $3, $4, $5, $6, $7, $8, now(),"
        "  case when $3 = 'delivered' then now() end, $9, $10, $11)"
        " on conflict (document_id, unit) do update set state = excluded.state,"
        "  trusted = excluded.trusted, reason = excluded.reason,"
        "  reason_text = excluded.reason_text, signer = excluded.signer,"
        "  signer_serial = excluded.signer_serial, verified_at = excluded.verified_at,"
        "  delivered_at = excluded.delivered_at,"
        "  delivered_message_id = excluded.delivered_message_id, clerks = excluded.clerks,"
        "  warning = excluded.warning, updated_at = now()",
        doc, unit, state, trusted, reason, text, signer, signer_serial, delivered_message_id,
        clerks, warning)


async def record_verdicts(conn: Conn, doc: int, units: Sequence[str], clerks: Sequence[int],
                          *, state: str, trusted: bool, reason: str, text: str,
                          signer: str | None, signer_serial: str | None,
                          delivered_message_id: int | None = None,
                          warning: str | None = None) -> None:
    """:func:`record_verdict` for several units in one statement (``clerks`` per unit)."""
    await conn.execute(
        "insert into document_recipients(document_id, unit, state, trusted, reason, reason_text,"
        " signer, signer_serial, verified_at, delivered_at, delivered_message_id, clerks,"
        " warning) select $1, u, $3, $4, $5, $6, $7, $8, now(),"
        "  case when $3 = 'delivered' then now() end, $9, c, $11"
        " from unnest($2::text[], $10::int[]) as x(u, c)"
        " on conflict (document_id, unit) do update set state = excluded.state,"
        "  trusted = excluded.trusted, reason = excluded.reason,"
        "  reason_text = excluded.reason_text, signer = excluded.signer,"
        "  signer_serial = excluded.signer_serial, verified_at = excluded.verified_at,"
        "  delivered_at = excluded.delivered_at,"
        "  delivered_message_id = excluded.delivered_message_id, clerks = excluded.clerks,"
        "  warning = excluded.warning, updated_at = now()",
        doc, list(units), state, trusted, reason, text, signer, signer_serial,
        delivered_message_id, list(clerks), warning)


async def add_events(conn: Conn, kind: str, detail: str, *, doc: int,
                     units: Sequence[str]) -> None:
    """:func:`add_event` for several units in one statement."""
    await conn.execute("insert into document_events(document_id, unit, kind, detail)"
                       " select $1, u, $2, $3 from unnest($4::text[]) u",
                       doc, kind, detail, list(units))


async def mark_receipt_sent(conn: Conn, doc: int, unit: str, by: str, *,
                            signed: bool = False) -> None:
    await conn.execute(
        "update document_recipients set receipt_by = $3, receipt_sent_at = now(),"
        " state = case when $4 then 'signed' else state end,"
        " signed_at = case when $4 then now() else signed_at end,"
        " signed_by = case when $4 then $3 else signed_by end, updated_at = now()"
        " where document_id = $1 and unit = $2", doc, unit, by, signed)


async def recipient_for_update(conn: Conn, doc: int, unit: str) -> RecipientRow | None:
    r = await conn.fetchrow(f"select {RCPT_COLUMNS} from document_recipients"
                            " where document_id = $1 and unit = $2 for update", doc, unit)
    return _rcpt(r) if r else None


async def mark_signed(conn: Conn, doc: int, unit: str, *, by: str, at: datetime,
                      receipt_message_id: int) -> bool:
    res = await conn.execute(
        "update document_recipients set state = 'signed', signed_at = $3,"
        " signed_by = coalesce(receipt_by, $4), receipt_message_id = $5, updated_at = now()"
        " where document_id = $1 and unit = $2 and state = 'delivered'",
        doc, unit, at, by, receipt_message_id)
    return res.endswith(" 1")


async def add_event(conn: Conn, kind: str, detail: str, *, doc: int | None = None,
                    unit: str | None = None, message_id: int | None = None) -> None:
    await conn.execute("insert into document_events(document_id, unit, kind, detail, message_id)"
                       " values ($1, $2, $3, $4, $5)", doc, unit, kind, detail, message_id)


async def events_of_kind(conn: Conn, doc: int, kind: str) -> set[str]:
    """Units that already have an event of ``kind`` for a document."""
    rows = await conn.fetch("select distinct unit from document_events"
                            " where document_id = $1 and kind = $2", doc, kind)
    return {r["unit"] for r in rows if r["unit"] is not None}


async def events(conn: Conn, doc: int) -> list[dict[str, Any]]:
    rows = await conn.fetch("select unit, kind, detail, at from document_events"
                            " where document_id = $1 order by id", doc)
    return [{**dict(r), "at": r["at"].isoformat()} for r in rows]


LIST_SQL = f"""
select {', '.join('d.' + c.strip() for c in DOC_COLUMNS.split(','))},
       coalesce(array_agg(r.unit order by r.unit) filter (where r.unit is not null), '{{}}') as units,
       coalesce(array_agg(r.state order by r.unit) filter (where r.unit is not null), '{{}}') as states,
       coalesce(array_agg(coalesce(r.reason, '') order by r.unit)
                filter (where r.unit is not null), '{{}}') as reasons
from documents d left join document_recipients r on r.document_id = d.id
where ($1::text is null or d.from_unit = $1 or exists (select 1 from document_recipients x
       where x.document_id = d.id and x.unit = $1))
group by d.id
having ($2::text is null or $2 = any(array_agg(r.state)))
order by d.id desc limit $3"""


async def list_documents(conn: Conn, unit: str | None, state: str | None,
                         limit: int = 500) -> list[tuple[DocRow, list[str], list[str], list[str]]]:
    rows = await conn.fetch(LIST_SQL, unit, state, limit)
    out = []
    for r in rows:
        values = list(r.values())
        out.append((_doc_values(values[:17]), list(values[17]), list(values[18]),
                    list(values[19])))
    return out


def _doc_values(values: list[Any]) -> DocRow:
    if values[14] is not None:
        values[14] = bytes(values[14])
    return DocRow(*values)


async def revoke_after_delivery(conn: Conn, serial: str, since: datetime | None,
                                text: str) -> list[tuple[int, str]]:
    """Issue #11 item 6: documents delivered (or signed for) under a seal revoked for key
    compromise, sealed since ``since`` (all when None), are no longer trusted."""
    rows = await conn.fetch(
        "update document_recipients r set state = 'revoked-after-delivery', trusted = false,"
        " reason = 'revoked-after-delivery', reason_text = $3, updated_at = now()"
        " from documents d where d.id = r.document_id and r.signer_serial = $1"
        " and r.state in ('delivered', 'signed')"
        " and ($2::timestamptz is null or coalesce(r.verified_at, d.created_at) >= $2)"
        " returning r.document_id, r.unit", serial, since, text)
    return [(r["document_id"], r["unit"]) for r in rows]


async def notify_certificates_changed(conn: Conn) -> None:
    """At COMMIT, every server's ``certificates_changed`` listener re-examines and tells
    the clerks (the CLI marks documents after the certificate's own NOTIFY went out)."""
    await conn.execute("select pg_notify('certificates_changed', '')")


async def claim_revoked_notices(conn: Conn,
                                limit: int = 200) -> list[tuple[int, str, str]]:
    """(document, unit) pairs revoked after delivery whose clerks were not told yet;
    claimed here, so with several processes each pair is told once."""
    rows = await conn.fetch(
        "with c as (select document_id, unit from document_recipients"
        " where state = 'revoked-after-delivery' and revoked_notified_at is null"
        " order by document_id limit $1 for update skip locked)"
        " update document_recipients r set revoked_notified_at = now() from c"
        " where r.document_id = c.document_id and r.unit = c.unit"
        " returning r.document_id, r.unit, coalesce(r.signer_serial, '') as serial", limit)
    return [(r["document_id"], r["unit"], r["serial"]) for r in rows]


async def count_revoked_after_delivery(conn: Conn, serial: str) -> int:
    return int(await conn.fetchval("select count(*) from document_recipients"
                                   " where signer_serial = $1"
                                   " and state = 'revoked-after-delivery'", serial))
