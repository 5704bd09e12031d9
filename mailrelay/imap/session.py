"""Command execution: one IMAP session over the sans-IO core and a ``MailStore``.

The only async part of the IMAP package; it awaits the store and writes
responses into the core. The network loop stays thin::

    session = ImapSession(core, store, auth, tls=is_tls)
    session.greeting()
    ... core.receive_data(data)
    while (ev := core.next_event()) is not NEED_DATA:
        await session.handle(ev, now=datetime.now(timezone.utc))
    write(core.data_to_send())
    # on a store NOTIFY for the selected mailbox:
    await session.notify(changes); write(core.data_to_send())
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Protocol, cast

from directory.sasl import (
    Challenge,
    ChannelBinding,
    CheckPassword,
    Failure,
    SaslServer,
    Step,
    Success,
    offered,
)
from mailrelay.mime import normalize_crlf, parse_message

from . import fetch as fetchmod
from . import mailbox as mb
from .proto import commands as c
from .proto.connection import AuthResponse, CommandReceived, Event, IdleDone, ImapServerCore
from .proto.response import Bye, Continuation, Tagged, Untagged, UntaggedStatus, fmt
from .proto.seqset import SequenceSet
from .search import needs_content, search, search_response, uses_modseq
from .store_api import Change, MailStore, MessageMeta, MessageRow, StoreError
from .view import SelectedView, flag_list

__all__ = ["Authenticator", "ImapSession"]


class Authenticator(Protocol):
    async def login(self, user: str, password: str) -> str | None:
        """Canonical user name when the credentials are good, else None."""
        ...


class SaslAuthenticator(Authenticator, Protocol):
    """An authenticator that runs the directory's SASL exchanges (directory.sasl): SCRAM,
    channel binding, one lockout for every mechanism."""

    binding: ChannelBinding | None

    def prepare(self, name: str) -> str:
        """The canonical user name for a SASL username."""
        ...

    async def advance(self, server: SaslServer, step: Step) -> Step:
        """The directory's part of the exchange (see ``Authenticator.advance``)."""
        ...


#: SASL mechanisms offered over IMAP, strongest first (RFC 7677, RFC 5802, RFC 4616)
IMAP_MECHANISMS = ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1",
                   "PLAIN")


_RECENT = frozenset({"\\Recent"})
#: rows one FETCH/SEARCH query loads at most, and message bytes when bodies are loaded
CHUNK_ROWS = 2000
CHUNK_BYTES = 4 << 20


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")

# RFC 3501 §7.4.1: no EXPUNGE during FETCH, STORE, SEARCH by sequence number
_NO_EXPUNGE = (c.Fetch, c.Store, c.Search)


class ImapSession:
    def __init__(
        self,
        core: ImapServerCore,
        store: MailStore,
        auth: Authenticator,
        *,
        tls: bool = False,
        allow_plaintext_login: bool = False,
        appendlimit: int | None = None,
    ) -> None:
        self.core, self.store, self.auth = core, store, auth
        self.tls = tls
        self.allow_plaintext = allow_plaintext_login
        self.appendlimit = appendlimit
        self.user: str | None = None
        self.view: SelectedView | None = None
        self.enabled: set[str] = set()
        self.saved: list[int] = []  # SEARCHRES ``$``
        self._sasl: SaslServer | None = None
        #: set by the driver: write out what the core holds, waiting for a slow client
        self.flush_output: Callable[[], Awaitable[bool]] | None = None

    # -- helpers -------------------------------------------------------------------
    @property
    def sasl_mechanisms(self) -> tuple[str, ...]:
        if not hasattr(self.auth, "advance"):
            return ("PLAIN",)
        binding = cast(SaslAuthenticator, self.auth).binding if self.tls else None
        return offered(IMAP_MECHANISMS, secured=True, binding=binding)

    def caps(self) -> list[str]:
        return mb.capabilities(
            self.user is not None,
            tls=self.tls or self.allow_plaintext,
            sasl=self.sasl_mechanisms,
            starttls_available=not self.tls,
            appendlimit=self.appendlimit,
        )

    def greeting(self) -> None:
        self.core.send(
            UntaggedStatus(
                "OK", "cx-gateway IMAP4rev1 ready", "CAPABILITY " + " ".join(self.caps())
            )
        )

    def tls_started(self) -> None:
        self.tls = True

    def _ok(self, tag: str, text: str = "Completed", code: str | None = None) -> None:
        self.core.send(Tagged(tag, "OK", text, code))

    def _no(self, tag: str, text: str, code: str | None = None) -> None:
        self.core.send(Tagged(tag, "NO", text, code))

    def _bad(self, tag: str, text: str) -> None:
        self.core.send(Tagged(tag, "BAD", text))

    def _untagged(self, data: bytes | str) -> None:
        self.core.send(Untagged(data))

    async def notify(self, changes: Sequence[Change]) -> None:
        """Changes to the selected mailbox published by the store (IDLE / NOOP updates)."""
        await self._absorb(changes)
        if self.view is not None and self.core.idling:
            for u in self.view.drain(True):
                self.core.send(u)

    async def _absorb(self, changes: Sequence[Change]) -> None:
        """Queue store changes for the view, first claiming new arrivals as \\Recent.

        RFC 3501 §2.3.2: a new message is \\Recent in the first session told about it;
        the store's claim is atomic, so exactly one read-write session gets each one.
        """
        view = self.view
        if view is None:
            return
        upto = view.unclaimed(changes)
        if upto is not None and not view.readonly:
            view.claimed_to = upto
            first = await self.store.claim_recent(view.mailbox_id, upto)
            if first is not None:
                view.add_recent(first, upto)
        if self.view is view:
            view.queue(changes)

    def _drain(self, allow_expunge: bool = True) -> None:
        if self.view is not None:
            for u in self.view.drain(allow_expunge):
                self.core.send(u)

    # -- dispatch --------------------------------------------------------------------
    async def handle(self, event: Event, now: datetime) -> None:
        if isinstance(event, IdleDone):
            self._drain()
            self._ok(event.tag, "IDLE terminated")
            return
        if isinstance(event, AuthResponse):
            await self._auth_response(event)
            return
        if not isinstance(event, CommandReceived):
            return
        cmd = event.command
        handler = getattr(self, "_cmd_" + type(cmd).__name__.lower())
        try:
            await handler(cmd, now)
        except StoreError as exc:
            self.core.send(Tagged(cmd.tag, exc.status, exc.text, exc.code))

    # -- any state -------------------------------------------------------------------
    async def _cmd_capability(self, cmd: c.Capability, now: datetime) -> None:
        self._untagged("CAPABILITY " + " ".join(self.caps()))
        self._ok(cmd.tag)

    async def _cmd_noop(self, cmd: c.Command, now: datetime) -> None:
        if self.view is not None:
            await self._absorb(
                await self.store.changes_since(self.view.mailbox_id, self.view.highestmodseq)
            )
        self._drain()
        self._ok(cmd.tag)

    _cmd_check = _cmd_noop

    async def _cmd_logout(self, cmd: c.Logout, now: datetime) -> None:
        self.core.send(Bye("Logging out"))
        self._ok(cmd.tag)

    async def _cmd_id(self, cmd: c.Id, now: datetime) -> None:
        self._untagged(b"ID " + fmt(["name", "cx-gateway"]))  # RFC 2971
        self._ok(cmd.tag)

    # -- not authenticated -----------------------------------------------------------
    async def _cmd_starttls(self, cmd: c.StartTLS, now: datetime) -> None:
        if self.tls:
            self._bad(cmd.tag, "TLS already active")
        else:
            self._ok(cmd.tag, "Begin TLS negotiation now")

    async def _login(self, tag: str, user: str, password: str) -> None:
        canonical = await self.auth.login(user, password)
        if canonical is None:
            self._no(tag, "Authentication failed", "AUTHENTICATIONFAILED")
            return
        self.user = canonical
        self._ok(tag, "Logged in", "CAPABILITY " + " ".join(self.caps()))

    async def _cmd_login(self, cmd: c.Login, now: datetime) -> None:
        if not (self.tls or self.allow_plaintext):
            # RFC 3501 §6.2.3 LOGINDISABLED; RFC 5530 PRIVACYREQUIRED
            self._no(cmd.tag, "Use STARTTLS first", "PRIVACYREQUIRED")
            return
        await self._login(cmd.tag, cmd.user, cmd.password)

    async def _cmd_authenticate(self, cmd: c.Authenticate, now: datetime) -> None:
        self._sasl = None
        if cmd.mechanism not in self.sasl_mechanisms:
            self._no(cmd.tag, "Unsupported mechanism", None)
            return
        if not (self.tls or self.allow_plaintext):
            self._no(cmd.tag, "Use STARTTLS first", "PRIVACYREQUIRED")
            return
        if hasattr(self.auth, "advance"):
            auth = cast(SaslAuthenticator, self.auth)
            binding = auth.binding if self.tls else None
            # RFC 3501 §6.2.2 has no success data: SCRAM's server-final is a last "+".
            self._sasl = SaslServer(cmd.mechanism, prepare=auth.prepare, binding=binding,
                                    plus_offered=binding is not None,
                                    final_in_challenge=True)
        else:
            self._sasl = SaslServer(cmd.mechanism, prepare=str.lower, final_in_challenge=True)
        await self._sasl_reply(cmd.tag, self._sasl.start(cmd.initial_response))

    async def _auth_response(self, ev: AuthResponse) -> None:
        sasl = self._sasl
        if ev.cancelled or sasl is None:
            self._sasl = None
            self._bad(ev.tag, "Authentication cancelled")  # RFC 3501 §6.2.2
            return
        await self._sasl_reply(ev.tag, sasl.receive(ev.data))

    async def _sasl_reply(self, tag: str, step: Step) -> None:
        """Let the directory do its part, then answer the client (RFC 3501 §6.2.2)."""
        sasl = self._sasl
        assert sasl is not None
        if hasattr(self.auth, "advance"):
            step = await cast(SaslAuthenticator, self.auth).advance(sasl, step)
        while isinstance(step, CheckPassword):  # a login()-only authenticator (tests)
            step = sasl.verdict(await self.auth.login(step.username, step.password) is not None)
        if isinstance(step, Success):
            self._sasl = None
            self.user = step.username
            self._ok(tag, "Logged in", "CAPABILITY " + " ".join(self.caps()))
        elif isinstance(step, Failure):
            self._sasl = None
            if step.condition == "temporary":
                self._no(tag, "Authentication is unavailable, try again later", "UNAVAILABLE")
            else:
                self._no(tag, "Authentication failed", "AUTHENTICATIONFAILED")
        elif isinstance(step, Challenge):
            self.core.send(Continuation(_b64(step.data)))
        else:
            raise RuntimeError(f"the authenticator left {step!r} unanswered")

    async def _cmd_compress(self, cmd: c.Compress, now: datetime) -> None:
        if cmd.mechanism != "DEFLATE":
            self._bad(cmd.tag, "Unknown compression mechanism")
        elif self.core.compressed:
            self._no(cmd.tag, "Already compressing", "COMPRESSIONACTIVE")  # RFC 4978 §3
        else:
            self._ok(cmd.tag, "DEFLATE active")

    # -- authenticated -----------------------------------------------------------------
    @property
    def _u(self) -> str:
        assert self.user is not None
        return self.user

    async def _cmd_enable(self, cmd: c.Enable, now: datetime) -> None:
        new = [
            x for x in cmd.capabilities if x in ("CONDSTORE", "QRESYNC") and x not in self.enabled
        ]
        self.enabled.update(new)
        self._untagged("ENABLED" + "".join(" " + x for x in new))  # RFC 5161 §3.2
        self._ok(cmd.tag)

    async def _cmd_namespace(self, cmd: c.Namespace, now: datetime) -> None:
        self._untagged(f'NAMESPACE (("" "{mb.DELIMITER}")) NIL NIL')  # RFC 2342
        self._ok(cmd.tag)

    async def _cmd_create(self, cmd: c.Create, now: datetime) -> None:
        await self.store.create_mailbox(self._u, cmd.mailbox.rstrip(mb.DELIMITER), cmd.special_use)
        self._ok(cmd.tag)

    async def _cmd_delete(self, cmd: c.Delete, now: datetime) -> None:
        if cmd.mailbox == "INBOX":  # RFC 3501 §6.3.4
            self._no(cmd.tag, "INBOX cannot be deleted", "CANNOT")
            return
        await self.store.delete_mailbox(self._u, cmd.mailbox)
        self._ok(cmd.tag)

    async def _cmd_rename(self, cmd: c.Rename, now: datetime) -> None:
        await self.store.rename_mailbox(self._u, cmd.old, cmd.new)
        self._ok(cmd.tag)

    async def _cmd_subscribe(self, cmd: c.Subscribe, now: datetime) -> None:
        await self.store.set_subscribed(self._u, cmd.mailbox, True)
        self._ok(cmd.tag)

    async def _cmd_unsubscribe(self, cmd: c.Unsubscribe, now: datetime) -> None:
        await self.store.set_subscribed(self._u, cmd.mailbox, False)
        self._ok(cmd.tag)

    async def _cmd_list(self, cmd: c.List, now: datetime) -> None:
        boxes = await self.store.list_mailboxes(self._u)
        lines = mb.list_responses(
            boxes,
            cmd.reference,
            list(cmd.patterns),
            subscribed_only="SUBSCRIBED" in cmd.selection,
            special_use_only="SPECIAL-USE" in cmd.selection,
        )
        for line in lines:
            self.core.send(line)
        if cmd.status_items:  # RFC 5819
            for m in boxes:
                if any(mb.list_match(cmd.reference, p, m.name) for p in cmd.patterns):
                    if "\\Noselect" not in m.attributes:
                        vals = await self.store.status(self._u, m.name, cmd.status_items)
                        self.core.send(mb.status_response(m.name, vals, cmd.status_items))
        self._ok(cmd.tag)

    async def _cmd_lsub(self, cmd: c.Lsub, now: datetime) -> None:
        boxes = await self.store.list_mailboxes(self._u)
        for line in mb.list_responses(
            boxes, cmd.reference, [cmd.pattern], command="LSUB", subscribed_only=True
        ):
            self.core.send(line)
        self._ok(cmd.tag)

    async def _cmd_status(self, cmd: c.Status, now: datetime) -> None:
        vals = await self.store.status(self._u, cmd.mailbox, cmd.items)
        self.core.send(mb.status_response(cmd.mailbox, vals, cmd.items))
        self._ok(cmd.tag)

    async def _cmd_append(self, cmd: c.Append, now: datetime) -> None:
        if self.appendlimit is not None and len(cmd.message) > self.appendlimit:
            self._no(cmd.tag, "Message too large", "TOOBIG")  # RFC 7889
            return
        raw = normalize_crlf(cmd.message)
        flags = [f for f in cmd.flags if f != "\\Recent"]
        res = await self.store.append(
            self._u, cmd.mailbox, raw, flags, cmd.date or now, parse_message(raw)
        )
        if self.view is not None:
            await self._absorb(
                await self.store.changes_since(self.view.mailbox_id, self.view.highestmodseq)
            )
            self._drain()
        self._ok(cmd.tag, "Appended", f"APPENDUID {res.uidvalidity} {res.uid}")  # RFC 4315

    async def _cmd_idle(self, cmd: c.Idle, now: datetime) -> None:
        self.core.send(Continuation("idling"))
        self._drain()

    async def _cmd_getquota(self, cmd: c.GetQuota, now: datetime) -> None:
        res = await self.store.quota(self._u, cmd.root)
        self._quota_line(cmd.root, res)
        self._ok(cmd.tag)

    async def _cmd_getquotaroot(self, cmd: c.GetQuotaRoot, now: datetime) -> None:
        res = await self.store.quota(self._u, "")
        self._untagged(b"QUOTAROOT " + fmt(cmd.mailbox) + b' ""')  # RFC 9208 §4.4.1
        self._quota_line("", res)
        self._ok(cmd.tag)

    def _quota_line(self, root: str, res: Sequence[object]) -> None:
        items = " ".join(f"{r.name} {r.usage} {r.limit}" for r in res)  # type: ignore[attr-defined]
        self._untagged(b"QUOTA " + fmt(root) + f" ({items})".encode())

    # -- selected ------------------------------------------------------------------------
    async def _cmd_select(self, cmd: c.Select, now: datetime) -> None:
        self.view = None
        if cmd.qresync and "QRESYNC" not in self.enabled:
            self._bad(cmd.tag, "QRESYNC not enabled")  # RFC 7162 §3.2.5
            return
        result = await self.store.select(self._u, cmd.mailbox, cmd.readonly)
        if cmd.condstore:
            self.enabled.add("CONDSTORE")
        view = SelectedView(
            result, condstore="CONDSTORE" in self.enabled, qresync="QRESYNC" in self.enabled
        )
        for line in mb.select_responses(result, view):
            self.core.send(line)
        q = cmd.qresync
        if q is not None and q.uidvalidity == result.uidvalidity:
            gone = await self.store.expunged_since(result.mailbox_id, q.modseq)
            if q.known_uids is not None:
                gone = q.known_uids.filter(gone, max(gone, default=1))
            if gone:
                self._untagged(f"VANISHED (EARLIER) {SequenceSet.from_numbers(gone)}")
            for uid in view.uids:
                if view.modseqs[uid] > q.modseq:
                    self._untagged(
                        f"{view.seq_of(uid)} FETCH (UID {uid} FLAGS {flag_list(view.flags_of(uid))} "
                        f"MODSEQ ({view.modseqs[uid]}))"
                    )
        self.view = view
        self.saved = []
        self._ok(cmd.tag, "Selected", mb.select_tagged_code(result.readonly or cmd.readonly))

    async def _cmd_unselect(self, cmd: c.Command, now: datetime) -> None:
        self.view = None
        self._ok(cmd.tag)

    async def _cmd_close(self, cmd: c.Close, now: datetime) -> None:
        view = self.view
        if view is not None and not view.readonly:
            await self.store.expunge(view.mailbox_id)  # RFC 3501 §6.4.2: silently
        self.view = None
        self._ok(cmd.tag)

    def _target(self, cmd: c.Fetch | c.Store | c.Copy | c.Move) -> list[int] | None:
        view = self.view
        assert view is not None
        if not cmd.uid and not cmd.seqset.saved and not view.valid_seqset(cmd.seqset):
            self._bad(cmd.tag, "Invalid sequence number")
            return None
        return view.resolve(cmd.seqset, cmd.uid, self.saved)

    async def _cmd_fetch(self, cmd: c.Fetch, now: datetime) -> None:
        view = self.view
        assert view is not None
        uids = self._target(cmd)
        if uids is None:
            return
        if cmd.changedsince is not None:
            uids = [u for u in uids if view.modseqs.get(u, 0) > cmd.changedsince]
        if cmd.vanished and cmd.changedsince is not None:
            gone = await self.store.expunged_since(view.mailbox_id, cmd.changedsince)
            gone = cmd.seqset.filter(gone, max(gone, default=1))
            if gone:
                self._untagged(f"VANISHED (EARLIER) {SequenceSet.from_numbers(gone)}")
        attrs = list(cmd.attrs)
        raw = fetchmod.needs_raw(attrs)
        structure = fetchmod.needs_structure(attrs)
        env_only = fetchmod.envelope_only(attrs)
        set_seen = fetchmod.sets_seen(attrs) and not view.readonly
        has_flags = any(a.name == "FLAGS" for a in attrs)
        # one query per chunk, written out (with back-pressure) before the next is read:
        # a FETCH 1:* of a big mailbox holds one chunk in memory, not the whole mailbox
        chunks = await self._chunks(view.mailbox_id, uids, raw)

        def load(i: int) -> asyncio.Future[list[MessageRow]]:
            return asyncio.ensure_future(self.store.fetch(
                view.mailbox_id, chunks[i], raw=raw, structure=structure, envelope_only=env_only
            ))

        # the next chunk loads while this one is written: at most two in memory
        ahead = load(0)
        try:
            for i in range(len(chunks)):
                rows = await ahead
                if i + 1 < len(chunks):
                    ahead = load(i + 1)
                if not await self._fetch_chunk(cmd, view, rows, attrs, set_seen, has_flags):
                    return
        finally:
            ahead.cancel()
        self._drain(allow_expunge=cmd.uid)
        self._ok(cmd.tag, "Fetch completed")

    async def _fetch_chunk(
        self,
        cmd: c.Fetch,
        view: SelectedView,
        rows: list[MessageRow],
        attrs: list[c.FetchAttr],
        set_seen: bool,
        has_flags: bool,
    ) -> bool:
        """Write the FETCH responses of one chunk; False when the command must stop."""
        seen_rows: dict[int, MessageMeta] = {}
        chunk_attrs = attrs
        if set_seen:
            unseen = [r.uid for r in rows if "\\Seen" not in r.flags]
            if unseen:
                res = await self.store.store_flags(view.mailbox_id, unseen, "+", ["\\Seen"])
                view.note_own_flags(res.updated)
                seen_rows = {m.uid: m for m in res.updated}
                if not has_flags:  # RFC 3501 §6.4.5: report the change
                    chunk_attrs = [*attrs, c.FetchAttr("FLAGS")]
        for row in rows:
            seq = view.seq_of(row.uid)
            if seq is None:
                continue
            if row.uid in seen_rows:
                m = seen_rows[row.uid]
                row = replace(row, flags=m.flags, modseq=m.modseq)
            try:
                self._untagged(
                    fetchmod.fetch_response(seq, row, chunk_attrs, view.is_recent(row.uid))
                )
            except fetchmod.BinaryUnknownEncoding:
                self._no(cmd.tag, "Unknown Content-Transfer-Encoding", "UNKNOWN-CTE")
                return False
        del rows
        return await self._output()

    async def _output(self) -> bool:
        """Hand what the core holds to the connection, waiting while the client is slow;
        False when the connection is gone."""
        return self.flush_output is None or await self.flush_output()

    async def _chunks(self, mailbox_id: int, uids: list[int], raw: bool) -> list[list[int]]:
        """Split ``uids`` into the groups one query each loads: CHUNK_ROWS rows, and with
        message bodies also at most CHUNK_BYTES of them (one big message goes alone)."""
        if not raw or len(uids) <= 1:
            return [uids[i : i + CHUNK_ROWS] for i in range(0, len(uids), CHUNK_ROWS)] or [[]]
        out: list[list[int]] = []
        cur: list[int] = []
        total = 0
        for uid, size in await self.store.sizes(mailbox_id, uids):
            if cur and (total + size > CHUNK_BYTES or len(cur) >= CHUNK_ROWS):
                out.append(cur)
                cur, total = [], 0
            cur.append(uid)
            total += size
        return [*out, cur]

    async def _cmd_store(self, cmd: c.Store, now: datetime) -> None:
        view = self.view
        assert view is not None
        if view.readonly:
            self._no(cmd.tag, "Mailbox is read-only", "READ-ONLY")
            return
        uids = self._target(cmd)
        if uids is None:
            return
        res = await self.store.store_flags(
            view.mailbox_id, uids, cmd.mode, cmd.flags, cmd.unchangedsince
        )
        view.note_own_flags(res.updated)
        if not cmd.silent or cmd.unchangedsince is not None:
            for m in res.updated:
                seq = view.seq_of(m.uid)
                items = f"FLAGS {flag_list(view.flags_of(m.uid) if seq else m.flags)}"
                if cmd.uid or view.qresync:
                    items = f"UID {m.uid} " + items
                if view.condstore:
                    items += f" MODSEQ ({m.modseq})"
                self._untagged(f"{seq} FETCH ({items})")
        self._drain(allow_expunge=cmd.uid)
        if res.modified:
            nums = res.modified if cmd.uid else [view.seq_of(u) or 0 for u in res.modified]
            self._ok(
                cmd.tag, "Conditional STORE failed", f"MODIFIED {SequenceSet.from_numbers(nums)}"
            )
        else:
            self._ok(cmd.tag, "Store completed")

    async def _cmd_search(self, cmd: c.Search, now: datetime) -> None:
        view = self.view
        assert view is not None
        if cmd.charset not in (None, "UTF-8", "US-ASCII"):
            # RFC 3501 §6.4.4: unknown charset → NO [BADCHARSET]
            self._no(cmd.tag, "Unsupported charset", "BADCHARSET (UTF-8 US-ASCII)")
            return
        full = needs_content(cmd.key)
        max_uid = view.uids[-1] if view.uids else 0
        hits: list[MessageRow] = []
        for chunk in await self._chunks(view.mailbox_id, list(view.uids), full):
            rows = await self.store.fetch(view.mailbox_id, chunk, raw=full, structure=full)
            rows = [
                (replace(r, flags=r.flags | _RECENT) if view.is_recent(r.uid) else r)
                for r in rows
                if view.seq_of(r.uid) is not None
            ]
            seqs = [view.seq_of(r.uid) or 0 for r in rows]
            found = search(cmd.key, rows, seqs, view.exists, max_uid, self.saved)
            # keep only what the reply needs, not the bodies of the hits
            hits += [replace(r, raw=None, structure=None) if full else r for r in found]
        numbers = [r.uid if cmd.uid else view.seq_of(r.uid) or 0 for r in hits]
        if cmd.returns is not None and "SAVE" in cmd.returns:
            self.saved = [r.uid for r in hits]  # RFC 5182
        returns = cmd.returns
        if returns is not None:
            returns = tuple(x for x in returns if x != "SAVE")
            if not returns and "SAVE" in (cmd.returns or ()):
                returns = None
        modseq = max((r.modseq for r in hits), default=None) if uses_modseq(cmd.key) else None
        if returns is not None or cmd.returns is None:
            self._untagged(
                search_response(
                    cmd.tag, numbers, uid=cmd.uid, returns=returns, highest_modseq=modseq
                )
            )
        self._drain(allow_expunge=cmd.uid)
        self._ok(cmd.tag, "Search completed")

    async def _copy_move(self, cmd: c.Copy | c.Move, move: bool) -> None:
        view = self.view
        assert view is not None
        uids = self._target(cmd)
        if uids is None:
            return
        if not uids:
            self._ok(cmd.tag, "Nothing to do")
            return
        op = self.store.move if move else self.store.copy
        res = await op(view.mailbox_id, uids, self._u, cmd.mailbox)
        code = (
            f"COPYUID {res.uidvalidity} {SequenceSet.from_numbers(res.source_uids)} "
            f"{SequenceSet.from_numbers(res.dest_uids)}"
        )
        if not move:
            self._ok(cmd.tag, "Copied", code)
            return
        # RFC 6851 §4.3: COPYUID goes in an untagged OK before the expunges
        self.core.send(UntaggedStatus("OK", "Moved", code))
        for line in view.expunge_now(res.source_uids):
            self.core.send(line)
        self._ok(cmd.tag, "Move completed")

    async def _cmd_copy(self, cmd: c.Copy, now: datetime) -> None:
        await self._copy_move(cmd, False)

    async def _cmd_move(self, cmd: c.Move, now: datetime) -> None:
        await self._copy_move(cmd, True)

    async def _cmd_expunge(self, cmd: c.Expunge, now: datetime) -> None:
        view = self.view
        assert view is not None
        if view.readonly:
            self._no(cmd.tag, "Mailbox is read-only", "READ-ONLY")
            return
        only = view.resolve(cmd.uid_set, True) if cmd.uid_set is not None else None
        gone = await self.store.expunge(view.mailbox_id, only)
        for line in view.expunge_now(gone):
            self.core.send(line)
        self._drain()
        self._ok(cmd.tag, "Expunge completed")
