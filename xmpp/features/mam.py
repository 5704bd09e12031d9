"""Message Archive Management (XEP-0313, ``urn:xmpp:mam:2``) with RSM (XEP-0059) paging
and stable stanza ids (XEP-0359), for one-to-one chat and for rooms.

One-to-one: a chat (or normal, with a body) message between local accounts is ONE row of
``xmpp_mam`` read from both participants' views: ``owner`` is the sender's archive and
``peer`` the recipient's (when only one side archives, the row is that side's alone:
``owner`` = that side, ``peer`` null). Both views share one id, the recipient's archive id,
added to the message as ``<stanza-id by=recipient>`` before delivery (the
``stanza/inbound`` hook, after blocking); XEP-0359 asks it to be unique within each
archive, and it is (random, unique ``(stanza_id, owner)``). After routing
(``message/routed``) the row is queued and written with COPY in batches by one background
writer, so routing never waits for the database; through a database outage the writer
retries (bounded backlog, back-pressure). Copies that are not routed again (offline
delivery, XEP-0198 resends, carbons) are not archived again, and a repeated write is a
no-op. Purging one user's archive hides their side of shared rows only (per-side
``owner_shown`` / ``peer_shown``); a row in nobody's view is deleted.

Rooms: the MUC module calls the ``muc/message`` sync hook for each groupchat broadcast
(room JID, stanza, stable id) on the room's home node; the row goes to the room's archive
(``owner`` = room): one archive however many nodes the occupants are on. Queries sent to
a room JID reach the room (on its home) and come here as the ``muc/room/iq`` bus event;
they are answered when ``muc/archive/allowed`` (``StanzaEvent(iq, origin, room)``) says
the requester may read the room's history; nobody answering means ``forbidden``.

Preferences (XEP-0313 §7): default always | never | roster, plus always/never lists,
kept in memory (they are consulted on the routing hot path) and in PostgreSQL.

Queries are keyset paginated on the row's serial id: a view is the union of two index
ranges, (owner, id) and (peer, id), or with with= (owner, with_jid, id) and (peer, owner,
id); the cost of a page does not depend on its depth. The RSM count is exact up to
COUNT_EXACT rows a side, else a full count cached per owner and filter (XEP-0059 lets it
be approximate), kept exact for this process's writes. The SQL lives in ``MamStore``
(the feature's repository).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from xml.etree.ElementTree import Element, SubElement, fromstring

from ..events import RosterQuery
from ..host import Host
from ..proto import ns
from ..proto.errors import StanzaError, error_reply
from ..proto.serializer import to_string
from ..repo import notify_changes
from ..router import IqEvent, Resource, StanzaEvent
from ..stanzas import iq_result
from . import rsm, sid

log = logging.getLogger("cxgw.xmpp.mam")

NS = "urn:xmpp:mam:2"
NS_EXTENDED = "urn:xmpp:mam:2#extended"
QUERY = f"{{{NS}}}query"
PREFS = f"{{{NS}}}prefs"
XDATA = "jabber:x:data"
FORWARDED = "{urn:xmpp:forward:0}forwarded"
DELAY = "{urn:xmpp:delay}delay"
BODY = ns.q(ns.CLIENT, "body")
CARBONS = "urn:xmpp:carbons:2"
NO_STORE = ("{urn:xmpp:hints}no-store", "{urn:xmpp:hints}no-permanent-store")
MODES = ("always", "never", "roster")
DEFAULT_MODE = "always"
FIELDS = ("with", "start", "end", "before-id", "after-id")
BATCH = 500  # rows per write
UNIQUE_VIOLATION = "23505"  # SQLSTATE
#: Back-pressure: past HIGH rows waiting for the database, the c2s driver stops reading
#: from clients until the backlog is under LOW (bounded memory; nothing is dropped).
HIGH, LOW = 20000, 5000
#: Through a database outage the writer retries (50 ms doubling to 1 s); rows are given up
#: (oldest first, logged as errors) only past HARD_MAX (issue 13: durable or honest).
RETRY_FIRST, RETRY_MAX, HARD_MAX = 0.05, 1.0, 4 * HIGH


@dataclass(frozen=True, slots=True)
class Prefs:
    default: str = DEFAULT_MODE
    always: frozenset[str] = frozenset()
    never: frozenset[str] = frozenset()

    def decide(self, other: str) -> bool | None:
        """True: archive; False: don't; None: only if `other` is in the roster."""
        if other in self.never:
            return False
        if other in self.always or self.default == "always":
            return True
        return None if self.default == "roster" else False


@dataclass(frozen=True, slots=True)
class Filters:
    with_: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    after_id: str | None = None
    before_id: str | None = None


@dataclass(frozen=True, slots=True)
class Row:
    stanza_id: str
    ts: datetime
    stanza: str


#: An archive row as queued: (owner, stanza_id, with_jid, stanza, peer). `owner` is the
#: sender's archive (or the room's, or the recipient's when only the recipient archives),
#: `with_jid` the other party from the owner's side, `peer` the recipient's archive when
#: both sides keep the message (one row, both views), else None.
ArchiveRow = tuple[str, str, str, str, str | None]

#: RSM count (XEP-0059 §2.1 allows an approximate count for large result sets): exact
#: while each side of the view holds at most COUNT_EXACT rows (two bounded index-only
#: ranges), else a full count cached per owner and filter for COUNT_TTL seconds.
COUNT_EXACT, COUNT_TTL, COUNT_CACHE, COUNT_PER_OWNER = 1000, 60.0, 4096, 16


def _rows(rows: Sequence[tuple[Any, ...]]) -> list[ArchiveRow]:
    """Rows as 5-tuples (a 4-tuple has no peer: a one-sided row)."""
    return [r if len(r) == 5 else (r[0], r[1], r[2], r[3], None) for r in rows]  # type: ignore[misc]


class MamStore:
    """The archive tables (xmpp_mam, xmpp_mam_prefs); the only SQL of this feature.

    One row per message: the `owner` side's view through (owner, id) where owner_shown,
    the `peer` side's through (peer, id) where peer_shown; a query is the keyset union of
    both ranges."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        # owner -> filters -> [count, monotonic time counted]: large counts only
        self.counts: dict[str, dict[Filters, list[Any]]] = {}

    async def write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert archive rows in order; a repeated (stanza_id, owner) is a no-op.

        COPY first (several times cheaper for PostgreSQL than INSERT); a batch holding a
        row that is already archived (a resend) fails as a whole with a unique violation
        and is then written with INSERT ... ON CONFLICT DO NOTHING: nothing lost, nothing
        doubled."""
        records = [(o, i, w, t, p, p is not None) for o, i, w, t, p in _rows(rows)]
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        "xmpp_mam", records=records,
                        columns=("owner", "stanza_id", "with_jid", "stanza", "peer",
                                 "peer_shown"))
                if self.counts:
                    self._counted(records)
                return
            except Exception as exc:
                if getattr(exc, "sqlstate", None) != UNIQUE_VIOLATION:
                    raise
            cols = [list(c) for c in zip(*records, strict=True)]
            await conn.execute(
                """insert into xmpp_mam(owner, stanza_id, with_jid, stanza, peer, peer_shown)
                   select * from unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                        $5::text[], $6::bool[])
                   on conflict (stanza_id, owner) do nothing""", *cols)
        for r in records:  # which rows were new is not known here: count again
            self.counts.pop(r[0], None)
            if r[4] is not None:
                self.counts.pop(r[4], None)

    def _counted(self, records: list[tuple[Any, ...]]) -> None:
        """Keep cached counts exact for rows this process wrote: a new row is the newest
        of its views, so it joins every cached result set whose with= names its other
        party and that has no upper bound (other nodes' writes show after COUNT_TTL)."""
        now = datetime.now(UTC)
        for owner, _, with_, _, peer, _ in records:
            for me, other in ((owner, with_), (peer, owner)):
                cached = self.counts.get(me) if me is not None else None
                if not cached:
                    continue
                for f, entry in list(cached.items()):
                    if f.with_ not in (None, other) or f.before_id is not None:
                        continue
                    if f.end is None:
                        entry[0] += 1
                    elif f.end >= now:
                        del cached[f]

    async def purge(self, owner: str, before: datetime | None = None) -> int:
        """Take messages (all, or those older than `before`) out of `owner`'s archive (an
        account's, or a room's closed for a unit room). The other participant's view of
        a shared row stays; a row in nobody's view is deleted. Returns rows taken out."""
        ts = "" if before is None else " and ts < $2"
        args: list[object] = [owner] if before is None else [owner, before]
        async with self.pool.acquire() as conn, conn.transaction():
            gone = await conn.execute(
                f"""delete from xmpp_mam where ((owner = $1 and owner_shown and not peer_shown)
                    or (peer = $1 and peer_shown and not owner_shown)){ts}""", *args)
            mine = await conn.execute(
                f"update xmpp_mam set owner_shown = false where owner = $1 and owner_shown{ts}",
                *args)
            theirs = await conn.execute(
                f"update xmpp_mam set peer_shown = false where peer = $1 and peer_shown{ts}",
                *args)
        self.counts.pop(owner, None)
        return sum(int(done.split()[-1]) for done in (gone, mine, theirs))

    async def all_prefs(self) -> dict[str, Prefs]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch("select * from xmpp_mam_prefs")
        return {r["owner"]: Prefs(r["default_mode"], frozenset(r["always"]),
                                  frozenset(r["never"])) for r in rows}

    async def set_prefs(self, owner: str, p: Prefs, notices: Sequence[str] = ()) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await notify_changes(conn, notices)
            await conn.execute(
                """insert into xmpp_mam_prefs(owner, default_mode, always, never)
                   values ($1, $2, $3, $4) on conflict (owner) do update
                   set default_mode = $2, always = $3, never = $4""",
                owner, p.default, sorted(p.always), sorted(p.never))

    async def query(self, owner: str, f: Filters, req: rsm.Request,
                    count: bool = True) -> tuple[list[Row], bool, int | None]:
        """One page in chronological order, whether it is the last one in the paging
        direction, and the size of the whole filtered result (RSM count)."""
        async with self.pool.acquire() as conn:
            async def key(stanza_id: str) -> int:
                value = await conn.fetchval(
                    """select id from xmpp_mam where stanza_id = $1
                       and ((owner = $2 and owner_shown) or (peer = $2 and peer_shown))""",
                    stanza_id, owner)
                if value is None:
                    raise StanzaError("item-not-found", "No such archive id")
                return int(value)

            # The two views of the archive: $1 the owner, $2 the with= JID if any.
            args: list[object] = [owner]
            mine = ["owner = $1", "owner_shown"]
            theirs = ["peer = $1", "peer_shown"]
            if f.with_:
                args.append(f.with_)
                mine.append("with_jid = $2")
                theirs.append("owner = $2")
            where: list[str] = []

            def cond(sql: str, value: object) -> None:
                args.append(value)
                where.append(sql.replace("?", f"${len(args)}"))

            if f.start:
                cond("ts >= ?", f.start)
            if f.end:
                cond("ts <= ?", f.end)
            if f.after_id:
                cond("id > ?", await key(f.after_id))
            if f.before_id:
                cond("id < ?", await key(f.before_id))
            base = list(where)
            if req.after:
                cond("id > ?", await key(req.after))
            if req.before:
                cond("id < ?", await key(req.before))
            order = "desc" if req.backwards else "asc"
            args.append(req.limit)
            lim = f"${len(args)}"
            a = " and ".join(mine + where)
            b = " and ".join(theirs + where)
            rows = await conn.fetch(
                f"""select stanza_id, ts, stanza from (
                      (select id, stanza_id, ts, stanza from xmpp_mam where {a}
                       order by id {order} limit {lim})
                      union all
                      (select id, stanza_id, ts, stanza from xmpp_mam where {b}
                       order by id {order} limit {lim})) v
                    order by id {order} limit {lim}""", *args)
            items, complete = rsm.page(
                [Row(r["stanza_id"], r["ts"], r["stanza"]) for r in rows], req)
            total = None
            if count:
                if complete and not req.after and not req.before:
                    total = len(items)  # the page is the whole result set
                else:
                    nargs = len(args) - 1 - (len(where) - len(base))
                    total = await self._count(conn, owner, f, mine, theirs, base,
                                              args[:nargs])
        return items, complete, total

    async def _count(self, conn: Any, owner: str, f: Filters, mine: list[str],
                     theirs: list[str], base: list[str], args: list[object]) -> int:
        """RSM count of the filtered view: exact up to COUNT_EXACT rows a side, else a
        cached full count (XEP-0059 §2.1: the count MAY be approximate)."""
        now = time.monotonic()
        cached = self.counts.get(owner, {}).get(f)
        if cached is not None and now - cached[1] < COUNT_TTL:
            return int(cached[0])  # only counts over the bound are cached
        a = " and ".join(mine + base)
        b = " and ".join(theirs + base)
        lim = COUNT_EXACT + 1
        n = await conn.fetchrow(
            f"""select (select count(*) from (select 1 from xmpp_mam where {a} limit {lim}) x) a,
                       (select count(*) from (select 1 from xmpp_mam where {b} limit {lim}) y) b""",
            *args)
        if n["a"] <= COUNT_EXACT and n["b"] <= COUNT_EXACT:
            return int(n["a"] + n["b"])
        total = int(await conn.fetchval(
            f"""select (select count(*) from xmpp_mam where {a})
                     + (select count(*) from xmpp_mam where {b})""", *args))
        if len(self.counts) >= COUNT_CACHE:
            self.counts.clear()
        cache = self.counts.setdefault(owner, {})
        if len(cache) >= COUNT_PER_OWNER:  # bounded: filters are the client's choice
            cache.clear()
        cache[f] = [total, now]
        return total


def _one_row(e: tuple[str, str, str, str, bool | None, bool | None]) -> ArchiveRow | None:
    """The archive row of (sender, recipient, id, stanza, sender keeps, recipient keeps)."""
    sender, to, id_, text, from_side, to_side = e
    if from_side:
        return (sender, id_, to, text, to if to_side else None)
    return (to, id_, sender, text, None) if to_side else None


def _archivable(stanza: Element) -> bool:
    """XEP-0313 §5.1.1: messages with a body (chat, normal); not carbons, not no-store."""
    if stanza.get("type", "normal") not in ("chat", "normal") or stanza.find(BODY) is None:
        return False
    for tag in NO_STORE:
        if stanza.find(tag) is not None:
            return False
    return True


def _stamp(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if ts.microsecond else \
        ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def _date(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())  # XEP-0082 DateTime
    except ValueError:
        raise StanzaError("bad-request", f"Bad date {text!r}") from None
    if value.tzinfo is None:
        raise StanzaError("bad-request", "A date needs a time zone")
    return value


def parse_form(query: Element) -> Filters:
    """The data form of a query (XEP-0313 §4.1); unknown fields are refused."""
    form = query.find(f"{{{XDATA}}}x")
    if form is None:
        return Filters()
    values: dict[str, str] = {}
    for field in form.findall(f"{{{XDATA}}}field"):
        var = field.get("var", "")
        value = (field.findtext(f"{{{XDATA}}}value") or "").strip()
        if var == "FORM_TYPE":
            if value not in (NS, ""):
                raise StanzaError("bad-request", "Unknown FORM_TYPE")
            continue
        if var not in FIELDS:
            raise StanzaError("bad-request", f"Unsupported field {var!r}")
        if value:
            values[var] = value
    with_ = values.get("with")
    return Filters(with_.partition("/")[0] if with_ else None,
                   _date(values["start"]) if "start" in values else None,
                   _date(values["end"]) if "end" in values else None,
                   values.get("after-id"), values.get("before-id"))


def _form() -> Element:
    x = Element(f"{{{XDATA}}}x", {"type": "form"})
    ft = SubElement(x, f"{{{XDATA}}}field", {"var": "FORM_TYPE", "type": "hidden"})
    SubElement(ft, f"{{{XDATA}}}value").text = NS
    for var, typ in (("with", "jid-single"), ("start", "text-single"),
                     ("end", "text-single"), ("before-id", "text-single"),
                     ("after-id", "text-single")):
        SubElement(x, f"{{{XDATA}}}field", {"var": var, "type": typ})
    return x


def _wrap(text: str) -> Element:
    return fromstring(f'<w xmlns="{ns.CLIENT}">{text}</w>')[0]


class Mam:
    def __init__(self, host: Host, store: MamStore) -> None:
        self.host = host
        self.store = store
        self.prefs: dict[str, Prefs] = {}
        # XEP-0313 §7: the server's default for users who set no preference.
        self.default = Prefs(getattr(host.cfg, "archive_default", DEFAULT_MODE))
        self.pending: list[ArchiveRow] = []
        self.roster_checks: list[tuple[str, str, str, str, bool | None, bool | None]] = []
        self.writer: asyncio.Task[None] | None = None
        self.dropped = 0  # rows given up past HARD_MAX

    async def start(self) -> None:
        self.prefs = await self.store.all_prefs()

    async def stop(self) -> None:
        try:
            await asyncio.wait_for(self.flushed(), 10)
        except TimeoutError:  # the database is still away: say what is left unwritten
            if self.writer is not None:
                self.writer.cancel()
            log.error("stopping with %d archive rows unwritten", len(self.pending))

    # -- archiving ---------------------------------------------------------------------------

    def on_inbound(self, stanza: Element, origin: Resource, to_bare: str) -> None:
        """Before delivery: the recipient's archive id as <stanza-id> (XEP-0359)."""
        if stanza.tag != ns.MESSAGE:
            return None
        sid.strip(stanza, to_bare)  # §3.3: nobody else writes ids in our name
        if not _archivable(stanza):
            return None
        if self.prefs.get(to_bare, self.default).decide(origin.bare) is not False:
            # stripped just above: append without sid.add's second scan
            SubElement(stanza, sid.STANZA_ID, {"by": to_bare, "id": sid.new_id()})
        return None

    def on_routed(self, stanza: Element, origin: Resource, to_bare: str,
                  delivered: list[Resource]) -> None:
        """After routing: one row for both participants, under the recipient's id."""
        rid = sid.get(stanza, to_bare)  # None: the recipient does not archive it
        if rid is None and not _archivable(stanza):  # an id: on_inbound found it archivable
            return None
        sender = origin.bare
        to_side = False if rid is None else \
            self.prefs.get(to_bare, self.default).decide(sender)
        from_side = False if sender == to_bare else \
            self.prefs.get(sender, self.default).decide(to_bare)  # a note to self: once
        if to_side is False and from_side is False:
            return None
        entry = (sender, to_bare, rid or sid.new_id(), to_string(stanza), from_side, to_side)
        if from_side is None or to_side is None:
            self.roster_checks.append(entry)
        else:
            row = _one_row(entry)
            if row is not None:
                self.pending.append(row)
        self._kick()
        return None

    def on_room_message(self, ev: Any) -> None:
        """``muc/message`` (a sync hook: queued in memory here, written by ``_write``)."""
        room = _attr(ev, "room", "room_jid", "jid")
        stanza = _attr(ev, "stanza", "message")
        id_ = _attr(ev, "id", "stanza_id")
        if not room or stanza is None or not id_:
            return None
        if stanza.find(BODY) is None and stanza.find(ns.q(ns.CLIENT, "subject")) is None:
            return None
        self.pending.append((str(room), str(id_), stanza.get("from", str(room)),
                             to_string(stanza), None))
        self._kick()
        return None

    def _kick(self) -> None:
        if len(self.pending) > HIGH:
            self.host.set_pressure("mam", True)
        if (self.pending or self.roster_checks) and self.writer is None:
            self.writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        delay = RETRY_FIRST
        try:
            while self.pending or self.roster_checks:
                if self.roster_checks:
                    checks, self.roster_checks = self.roster_checks, []
                    for sender, to, id_, text, from_side, to_side in checks:
                        if from_side is None:
                            from_side = await self._in_roster(sender, to)
                        if to_side is None:
                            to_side = await self._in_roster(to, sender)
                        row = _one_row((sender, to, id_, text, from_side, to_side))
                        if row is not None:
                            self.pending.append(row)
                batch, self.pending = self.pending[:BATCH], self.pending[BATCH:]
                if batch:
                    try:
                        await self.store.write(batch)
                        if delay > RETRY_FIRST:
                            log.warning("archive writes resumed")
                        delay = RETRY_FIRST
                    except Exception as exc:
                        # The database is away: keep the rows (a repeated row is a no-op,
                        # unique (owner, stanza_id)) and try again; back-pressure bounds
                        # memory, and only past HARD_MAX are the oldest rows given up.
                        self.pending[:0] = batch
                        if delay == RETRY_FIRST:
                            log.warning("archiving %d messages failed, retrying: %r",
                                        len(batch), exc)
                        self.host.set_pressure("mam", True)
                        if len(self.pending) > HARD_MAX:
                            lost = len(self.pending) - HARD_MAX
                            del self.pending[:lost]
                            self.dropped += lost
                            log.error("archive backlog over %d rows: %d oldest rows dropped",
                                      HARD_MAX, lost)
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, RETRY_MAX)
                        continue
                if len(self.pending) < LOW:
                    self.host.set_pressure("mam", False)
        finally:
            self.writer = None
            if len(self.pending) < LOW:
                self.host.set_pressure("mam", False)

    async def _in_roster(self, owner: str, other: str) -> bool:
        """XEP-0313 §7 default "roster": `other` is in `owner`'s roster."""
        state = await self.host.bus.fire("roster/subscription", RosterQuery(owner, other))
        return state not in (None, "none")

    async def on_room_purged(self, room: str) -> None:
        """``muc/room/purged``: the room's archive goes (after what is queued for it)."""
        await self.flushed()
        n = await self.store.purge(room)
        log.info("archive of %s purged (%d messages)", room, n)

    async def flushed(self) -> None:
        """Wait until every queued row is written (queries read their own writes)."""
        while self.writer is not None:
            await asyncio.shield(self.writer)

    # -- queries (XEP-0313 §4) -------------------------------------------------------------

    async def query(self, ev: IqEvent) -> Element:
        return await self._answer(ev.stanza, ev.origin, ev.origin.bare)

    async def query_form(self, ev: IqEvent) -> Element:
        q = Element(QUERY)
        q.append(_form())
        return iq_result(ev.stanza, q)

    async def _answer(self, iq: Element, origin: Resource, owner: str) -> Element:
        q = iq[0]
        filters = parse_form(q)
        req = rsm.parse(q)
        queryid = q.get("queryid")
        await self.flushed()
        rows, complete, total = await self.store.query(owner, filters, req)
        for row in rows:
            msg = Element(ns.MESSAGE, {"to": origin.full, "from": owner})
            attrs = {"id": row.stanza_id}
            if queryid:
                attrs["queryid"] = queryid
            fwd = SubElement(SubElement(msg, f"{{{NS}}}result", attrs), FORWARDED)
            SubElement(fwd, DELAY, {"stamp": _stamp(row.ts)})
            try:
                fwd.append(_wrap(row.stanza))
            except Exception:
                log.warning("unreadable archived message %s of %s", row.stanza_id, owner)
                continue
            origin.deliver(msg)
        fin = Element(f"{{{NS}}}fin", {"complete": "true"} if complete else {})
        fin.append(rsm.result(rows[0].stanza_id if rows else None,
                              rows[-1].stanza_id if rows else None, total))
        return iq_result(iq, fin)

    async def on_room_iq(self, ev: Any) -> Element | None:
        """``muc/room/iq``: a MAM query to a room (XEP-0313 §4 on a MUC archive)."""
        iq, origin, room = ev.stanza, ev.origin, ev.room
        child = iq[0] if len(iq) else None
        if child is None or child.tag != QUERY:
            return None
        try:
            if iq.get("type") == "get":
                q = Element(QUERY)
                q.append(_form())
                reply = iq_result(iq, q)
            else:
                allowed = await self.host.bus.fire("muc/archive/allowed",
                                                   StanzaEvent(iq, origin, room))
                if not allowed:
                    raise StanzaError("forbidden", "Only room members read its archive")
                reply = await self._answer(iq, origin, room)
        except StanzaError as exc:
            reply = error_reply(iq, exc)
        return reply

    # -- preferences (XEP-0313 §7) -----------------------------------------------------------

    async def heard_prefs(self, owner: str, _items: list[str]) -> None:
        """Another node changed `owner`'s preferences: reload them here."""
        await self.reload_prefs()

    async def reload_prefs(self) -> None:
        self.prefs = await self.store.all_prefs()

    async def get_prefs(self, ev: IqEvent) -> Element:
        return iq_result(ev.stanza, _prefs_el(self.prefs.get(ev.origin.bare, self.default)))

    async def set_prefs(self, ev: IqEvent) -> Element:
        el = ev.stanza[0]
        mode = el.get("default", DEFAULT_MODE)
        if mode not in MODES:
            raise StanzaError("bad-request", "default is always, never or roster")

        def jids(tag: str) -> frozenset[str]:
            box = el.find(f"{{{NS}}}{tag}")
            return frozenset((j.text or "").strip().partition("/")[0]
                             for j in (box.findall(f"{{{NS}}}jid") if box is not None else ())
                             if (j.text or "").strip())

        p = Prefs(mode, jids("always"), jids("never"))
        await self.store.set_prefs(ev.origin.bare, p,
                                   self.host.changes.payloads("mam-prefs", ev.origin.bare))
        self.prefs[ev.origin.bare] = p
        return iq_result(ev.stanza, _prefs_el(p))


def _attr(ev: Any, *names: str) -> Any:
    for name in names:
        value = getattr(ev, name, None)
        if value is not None:
            return value
    return None


def _prefs_el(p: Prefs) -> Element:
    el = Element(PREFS, {"default": p.default})
    for tag, jids in (("always", p.always), ("never", p.never)):
        box = SubElement(el, f"{{{NS}}}{tag}")
        for jid in sorted(jids):
            SubElement(box, f"{{{NS}}}jid").text = jid
    return el


def register(host: Host) -> Mam:
    m = Mam(host, host.stores.mam)
    # another node's prefs change reaches this node's cache (xmpp.changes)
    host.changes.on("mam-prefs", m.heard_prefs, m.reload_prefs)
    host.hooks.on("stanza/inbound", m.on_inbound, priority=-100)  # after blocking
    host.hooks.on("message/routed", m.on_routed, priority=-100)
    host.hooks.on("muc/message", m.on_room_message)
    host.bus.on("muc/room/iq", m.on_room_iq)
    host.bus.on("muc/room/purged", m.on_room_purged)
    host.bus.on(f"iq/self/set/{QUERY}", m.query)
    host.bus.on(f"iq/self/get/{QUERY}", m.query_form)
    host.bus.on(f"iq/self/get/{PREFS}", m.get_prefs)
    host.bus.on(f"iq/self/set/{PREFS}", m.set_prefs)
    host.on_start(m.start)
    host.on_stop(m.stop)
    # XEP-0313 §6: the archive is the account's, advertised on its bare JID ...
    for feature in (NS, NS_EXTENDED, sid.NS):
        if feature not in host.account_features:
            host.account_features.append(feature)
    # ... and on the server's domain too, where clients such as profanity look for it
    # before `/mam on`: a query sent to the domain is answered from the sender's archive.
    host.add_feature(NS)
    host.add_feature(NS_EXTENDED)
    host.bus.on(f"iq/host/set/{QUERY}", m.query)
    host.bus.on(f"iq/host/get/{QUERY}", m.query_form)
    # XEP-0313 §7 / XEP-0045: every room keeps an archive (``muc/message``) and answers
    # queries (``muc/room/iq``): rooms advertise it, where poezio looks before fetching.
    host.hooks.on("muc/room/features", lambda room: (NS, NS_EXTENDED))
    return m
