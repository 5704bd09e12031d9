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
import contextlib
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol, cast

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
from .binary_store import nul_body_to_base64
from .proto import commands as c
from .proto.connection import AuthResponse, CommandReceived, Event, IdleDone, ImapServerCore
from .proto.errors import ParseError
from .proto.parser import parse_command
from .proto.response import UTF8_NAMES, Bye, Continuation, Tagged, Untagged, UntaggedStatus, fmt
from .proto.seqset import SequenceSet
from .proto.spool import Spool
from .search import needs_content, search, search_response, uses_modseq
from .sort import (
    SortInfo,
    esort_response,
    format_threads,
    sort_info,
    sort_messages,
    thread_orderedsubject,
    thread_references,
)
from .store_api import Change, MailStore, MessageMeta, MessageRow, NewMessage, StoreError
from .view import SelectedView

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


#: bytes of rendered responses held before they are handed to the connection (which
#: then waits while the client is not reading: FETCH memory is bounded by this)
OUTPUT_HIGH = 256 << 10


def _streams(row: MessageRow, attrs: Sequence[c.FetchAttr]) -> bool:
    """Whether a FETCH response would be big enough to write item by item. BINARY
    items are rendered whole (an unknown encoding must fail before anything is sent)."""
    p = fetchmod.plan(attrs)
    if row.raw is None or p.binary:
        return False
    return p.bodies * len(row.raw) > OUTPUT_HIGH


#: what ENABLE accepts (RFC 5161)
ENABLEABLE = ("CONDSTORE", "QRESYNC", "UTF8=ACCEPT")
#: pipelined FETCH commands whose rows one query loads at most
READ_AHEAD = 64
# LIST options we implement (RFC 5258 §3, RFC 6154, RFC 5819); others are BAD
_LIST_SELECTION = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
_LIST_RETURN = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})
#: rows a SEARCH evaluates between two turns of the event loop
SEARCH_SLICE = 250
#: APPENDs with more message bytes than this are parsed in a worker thread, and only
#: two of them at a time per process hold their bytes in memory (the rest wait)
BIG_APPEND = 1 << 20
_BIG_APPENDS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)
_NO_LIMIT = contextlib.nullcontext()


def _big_appends() -> asyncio.Semaphore:
    """The process's (event loop's) two slots for big APPENDs."""
    loop = asyncio.get_running_loop()
    sem = _BIG_APPENDS.get(loop)
    if sem is None:
        sem = _BIG_APPENDS[loop] = asyncio.Semaphore(2)
    return sem


def _parse_append(data: bytes | Spool, binary: bool = False) -> tuple[bytes, dict[str, Any]]:
    """The stored form of an APPEND literal and its parsed structure. RFC 3516 §4.4: a
    literal8 message may hold binary parts, so its bytes (and any message with NUL) are
    stored as sent; text gets canonical CRLF line endings."""
    raw = data.read() if isinstance(data, Spool) else data
    if not (binary or b"\0" in raw):
        raw = normalize_crlf(raw)
    else:
        raw = nul_body_to_base64(raw)  # BODY[] may not carry NUL (RFC 3516 §4.2)
    return raw, parse_message(raw)


async def _prepare_append(m: c.AppendMessage, now: datetime) -> NewMessage:
    if isinstance(m.message, Spool) or len(m.message) > BIG_APPEND:
        # reading the spool and parsing a big message would stall every connection
        raw, structure = await asyncio.get_running_loop().run_in_executor(
            None, _parse_append, m.message, m.binary
        )
    else:
        raw, structure = _parse_append(m.message, m.binary)
    flags = tuple(f for f in m.flags if f != "\\Recent")
    return NewMessage(raw, flags, m.date or now, structure)


_ONLY_NUMBERS = frozenset({"ALL", "AND", "OR", "NOT", "UID", "SEQ"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ops(key: c.SearchKey) -> set[str]:
    out, todo = set(), [key]
    while todo:
        k = todo.pop()
        out.add(k.op)
        todo.extend(a for a in k.args if isinstance(a, c.SearchKey))
    return out


def _scope_is_answer(key: c.SearchKey) -> bool:
    """A program of (ANDed) UID and sequence sets only: its scope is its result."""
    keys = key.args if key.op == "AND" else (key,)
    return all(
        isinstance(k, c.SearchKey)
        and k.op in ("UID", "SEQ")
        and isinstance(k.args[0], SequenceSet)
        and not k.args[0].saved
        for k in keys
    )


def _search_scope(view: SelectedView, key: c.SearchKey) -> list[int]:
    """UIDs a program can match at all: those of its top-level UID and sequence sets
    (ANDed), so a set-limited SEARCH loads only the rows it names."""
    scope: set[int] | None = None
    for k in key.args if key.op == "AND" else (key,):
        if isinstance(k, c.SearchKey) and k.op in ("UID", "SEQ"):
            s = k.args[0]
            assert isinstance(s, SequenceSet)
            if s.saved:
                continue
            got = set(view.resolve(s, k.op == "UID"))
            scope = got if scope is None else scope & got
    return list(view.uids) if scope is None else sorted(scope)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")

# RFC 3501 §7.4.1: no EXPUNGE during FETCH, STORE, SEARCH by sequence number
_NO_EXPUNGE = (c.Fetch, c.Store, c.Search, c.Sort, c.Thread)


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
        self.saved: list[int] = []  # SEARCHRES ``$``
        # FETCH read-ahead (see _read_ahead): rows by UID, and the command shape they serve
        self._ahead: dict[int, MessageRow] = {}
        self._ahead_key: tuple[object, ...] | None = None
        self._ahead_last = 0  # the highest UID a read-ahead FETCH has answered
        # the next block of a walk, loading while the client is answered from _ahead
        self._next: asyncio.Future[list[MessageRow]] | None = None
        self._sasl: SaslServer | None = None
        #: set by the driver: write out what the core holds, waiting for a slow client
        self.flush_output: Callable[[], Awaitable[bool]] | None = None

    # -- state (the core's: RFC 3501 §3, no copy kept here) ---------------------------
    @property
    def view(self) -> SelectedView | None:
        """The selected mailbox, None unless the core is in the SELECTED state."""
        return cast(SelectedView | None, self.core.selected)

    @property
    def enabled(self) -> set[str]:
        return self.core.enabled

    def known_modseq(self, mailbox_id: int) -> int | None:
        """The MODSEQ up to which the selected mailbox's changes were taken in (for the
        change hub), None when ``mailbox_id`` is not selected."""
        view = self.view
        return view.synced if view is not None and view.mailbox_id == mailbox_id else None

    def _selected(self) -> SelectedView:
        view = self.view
        if view is None:  # the core allows these commands only when SELECTED
            raise StoreError("No mailbox selected", status="BAD")
        return view

    def _enable_condstore(self) -> None:
        """RFC 7162 §3.1: a CONDSTORE-enabling command enables CONDSTORE; with a
        mailbox selected the client learns its HIGHESTMODSEQ at once."""
        if "CONDSTORE" in self.enabled or "QRESYNC" in self.enabled:
            return
        self.enabled.add("CONDSTORE")
        view = self.view
        if view is not None:
            self.core.send(
                UntaggedStatus("OK", "Highest", f"HIGHESTMODSEQ {view.highestmodseq}")
            )

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

    async def notify(self, changes: Sequence[Change], mailbox_id: int | None = None) -> None:
        """Changes to the selected mailbox (``mailbox_id`` if given) published by the
        store (IDLE / NOOP updates)."""
        view = self.view
        if view is None or mailbox_id not in (None, view.mailbox_id):
            return
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
        if self.view is view:  # still selected after the await
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
        if self.core.utf8_accept:
            UTF8_NAMES.set(True)  # this task's replies carry UTF-8 mailbox names
        if self._ahead_key is not None and not isinstance(cmd, c.Fetch):
            self._drop_ahead()  # read-ahead rows live one burst only
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
                await self.store.changes_since(self.view.mailbox_id, self.view.synced)
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
        if self.user is None:  # the core allows these commands only after login
            raise StoreError("Not authenticated", status="BAD")
        return self.user

    async def _cmd_enable(self, cmd: c.Enable, now: datetime) -> None:
        new = [x for x in cmd.capabilities if x in ENABLEABLE and x not in self.enabled]
        self.enabled.update(new)
        if "UTF8=ACCEPT" in self.enabled:  # RFC 6855 §3
            self.core.utf8_accept = True
            UTF8_NAMES.set(True)
        self._untagged("ENABLED" + "".join(" " + x for x in new))  # RFC 5161 §3.2
        view = self.view
        if new and view is not None:  # RFC 7162 §3.1: the client learns HIGHESTMODSEQ
            self.core.send(UntaggedStatus("OK", "Highest", f"HIGHESTMODSEQ {view.highestmodseq}"))
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
        sel = set(cmd.selection)
        # RFC 5258 §3: an unknown selection or RETURN option is an error (BAD)
        unknown = (sel - _LIST_SELECTION) | (set(cmd.returns) - _LIST_RETURN)
        if unknown:
            self._bad(cmd.tag, "Unknown LIST option " + sorted(unknown)[0])
            return
        if "RECURSIVEMATCH" in sel and not sel - {"RECURSIVEMATCH", "REMOTE"}:
            # RFC 5258 §3.1: RECURSIVEMATCH alone (or with REMOTE only) is BAD
            self._bad(cmd.tag, "RECURSIVEMATCH needs another selection option")
            return
        boxes = await self.store.list_mailboxes(self._u)
        subscribed_only = "SUBSCRIBED" in sel
        want_subs = subscribed_only or "SUBSCRIBED" in cmd.returns
        subs = await self.store.subscriptions(self._u) if want_subs else []
        if list(cmd.patterns) == [""]:
            for line in mb.list_responses(boxes, cmd.reference, [""]):
                self.core.send(line)
            self._ok(cmd.tag)
            return
        entries = mb.list_entries(
            boxes,
            cmd.reference,
            list(cmd.patterns),
            subscribed_only=subscribed_only,
            special_use_only="SPECIAL-USE" in sel,
            subscriptions=subs,
            return_subscribed="SUBSCRIBED" in cmd.returns,
            recursive_match="RECURSIVEMATCH" in sel,
        )
        for entry in entries:
            self.core.send(mb.list_line("LIST", entry))
            name, attrs, _ = entry
            # RFC 5819 §2: STATUS for each listed mailbox that can be selected
            if cmd.status_items and not {"\\NonExistent", "\\Noselect"} & set(attrs):
                vals = await self.store.status(self._u, name, cmd.status_items)
                self.core.send(mb.status_response(name, vals, cmd.status_items))
        self._ok(cmd.tag)

    async def _cmd_lsub(self, cmd: c.Lsub, now: datetime) -> None:
        boxes = await self.store.list_mailboxes(self._u)
        subs = await self.store.subscriptions(self._u)
        for line in mb.list_responses(
            boxes, cmd.reference, [cmd.pattern], command="LSUB", subscriptions=subs
        ):
            self.core.send(line)
        self._ok(cmd.tag)

    async def _cmd_status(self, cmd: c.Status, now: datetime) -> None:
        if "HIGHESTMODSEQ" in cmd.items:
            self._enable_condstore()  # RFC 7162 §3.1
        vals = await self.store.status(self._u, cmd.mailbox, cmd.items)
        self.core.send(mb.status_response(cmd.mailbox, vals, cmd.items))
        self._ok(cmd.tag)

    async def _cmd_append(self, cmd: c.Append, now: datetime) -> None:
        msgs = cmd.messages()
        try:
            if self.appendlimit is not None and any(
                len(m.message) > self.appendlimit for m in msgs
            ):
                self._no(cmd.tag, "Message too large", "TOOBIG")  # RFC 7889
                return
            big = sum(len(m.message) for m in msgs) > BIG_APPEND
            async with _big_appends() if big else _NO_LIMIT:
                ready = [await _prepare_append(m, now) for m in msgs]
                if len(ready) == 1:
                    r = ready[0]
                    res = await self.store.append(
                        self._u, cmd.mailbox, r.raw, r.flags, r.internaldate, r.structure
                    )
                    code = f"APPENDUID {res.uidvalidity} {res.uid}"  # RFC 4315
                else:
                    # RFC 3502 §6.3.11: all messages or none
                    many = await self.store.append_many(self._u, cmd.mailbox, ready)
                    code = f"APPENDUID {many.uidvalidity} {SequenceSet.from_numbers(many.uids)}"
                del ready
        finally:
            for m in msgs:
                if isinstance(m.message, Spool):
                    m.message.close()
        if self.view is not None:
            await self._absorb(
                await self.store.changes_since(self.view.mailbox_id, self.view.synced)
            )
            self._drain()
        self._ok(cmd.tag, "Appended", code)

    async def _cmd_idle(self, cmd: c.Idle, now: datetime) -> None:
        view = self.view
        if view is not None:
            # catch up first: a change that committed between SELECT's snapshot and the
            # change hub's subscription would otherwise wait for the next one
            await self._absorb(await self.store.changes_since(view.mailbox_id, view.synced))
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
        # the core has closed any selected mailbox already (RFC 3501 §6.3.1)
        if cmd.qresync and "QRESYNC" not in self.enabled:
            self._bad(cmd.tag, "QRESYNC not enabled")  # RFC 7162 §3.2.5
            return
        result = await self.store.select(self._u, cmd.mailbox, cmd.readonly)
        if cmd.condstore:
            self.enabled.add("CONDSTORE")  # RFC 7162 §3.1.8
        # RFC 3501 §7.2.6: FLAGS names the mailbox's keyword list, which never drops a
        # keyword (a client may still hold messages with it): the store keeps it
        view = SelectedView(result, extensions=self.enabled)
        for line in mb.select_responses(result, view):
            self.core.send(line)
        q = cmd.qresync
        if q is not None and q.uidvalidity == result.uidvalidity:
            gone = await self.store.expunged_since(result.mailbox_id, q.modseq)
            if q.known_uids is not None:
                gone = q.known_uids.filter(gone, max(gone, default=1))
            if gone:
                self._untagged(f"VANISHED (EARLIER) {SequenceSet.from_numbers(gone)}")
            for m in sorted(result.messages, key=lambda m: m.uid):
                if m.modseq > q.modseq:
                    seq = view.seq_of(m.uid)
                    self._untagged(f"{seq} FETCH ({view.fetch_items(m.uid, m.flags, m.modseq)})")
        del result
        self.saved = []
        self.core.stage_selection(view)
        self._ok(cmd.tag, "Selected", mb.select_tagged_code(view.readonly or cmd.readonly))

    async def _cmd_unselect(self, cmd: c.Command, now: datetime) -> None:
        self._ok(cmd.tag)  # the core leaves the SELECTED state

    async def _cmd_close(self, cmd: c.Close, now: datetime) -> None:
        view = self.view
        if view is not None and not view.readonly:
            await self.store.expunge(view.mailbox_id)  # RFC 3501 §6.4.2: silently
        self._ok(cmd.tag)

    def _target(self, cmd: c.Fetch | c.Store | c.Copy | c.Move) -> list[int] | None:
        view = self._selected()
        if not cmd.uid and not cmd.seqset.saved and not view.valid_seqset(cmd.seqset):
            self._bad(cmd.tag, "Invalid sequence number")
            return None
        return view.resolve(cmd.seqset, cmd.uid, self.saved)

    async def _cmd_fetch(self, cmd: c.Fetch, now: datetime) -> None:
        view = self._selected()
        uids = self._target(cmd)
        if uids is None:
            return
        if cmd.changedsince is not None or any(a.name == "MODSEQ" for a in cmd.attrs):
            self._enable_condstore()  # RFC 7162 §3.1
        if cmd.vanished and cmd.changedsince is not None:
            gone = await self.store.expunged_since(view.mailbox_id, cmd.changedsince)
            gone = cmd.seqset.filter(gone, max(gone, default=1))
            if gone:
                self._untagged(f"VANISHED (EARLIER) {SequenceSet.from_numbers(gone)}")
        attrs = cmd.attrs
        fp = fetchmod.plan(attrs)
        raw, structure, env_only = fp.raw, fp.structure, fp.envelope_only
        set_seen = fp.sets_seen and not view.readonly
        has_flags = fp.has_flags
        early = await self._read_ahead(cmd, view, uids, raw, structure, env_only)
        if early is not None:
            if await self._fetch_chunk(cmd, view, early, attrs, set_seen, has_flags, False):
                self._drain(allow_expunge=cmd.uid)
                self._ok(cmd.tag, "Fetch completed")
            return
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

    async def _read_ahead(
        self,
        cmd: c.Fetch,
        view: SelectedView,
        uids: list[int],
        raw: bool,
        structure: bool,
        env_only: bool,
    ) -> list[MessageRow] | None:
        """Rows for a small FETCH loaded together with those of the same FETCHes the
        client has already pipelined behind it (mbsync and others fetch one message per
        command): one query for up to READ_AHEAD commands instead of one each. Only for
        items that never change for a UID (no FLAGS/MODSEQ, no implicit \\Seen); the
        rows kept are bounded by CHUNK_BYTES and dropped at the next other command."""
        key = (view.mailbox_id, view.uidvalidity, cmd.uid, cmd.attrs)
        # a client walking the mailbox one message per command: read ahead of it even
        # before its next commands arrive (they trickle in as it gets our replies)
        walking = (
            self._ahead_key == key and bool(uids) and self._ahead_last < min(uids)
        )
        if self._ahead_key == key and uids and self._next is not None and not all(
            u in self._ahead for u in uids
        ):
            block, self._next = self._next, None  # the walk reached the block loading
            try:
                self._ahead.update((r.uid, r) for r in await block)
            except asyncio.CancelledError:
                raise
            except Exception:
                pass  # the ordinary path below asks again (and reports a failure)
        if self._ahead_key == key and uids and all(u in self._ahead for u in uids):
            self._ahead_last = max(uids)
            rows = [self._ahead.pop(u) for u in uids]
            if walking and self._next is None and len(self._ahead) <= READ_AHEAD:
                self._load_next(view, raw, structure, env_only)
                await asyncio.sleep(0)  # the query leaves now, not after this burst
            return rows
        self._drop_ahead()
        if (
            not uids
            or len(uids) > 4
            or cmd.changedsince is not None
            or fetchmod.plan(cmd.attrs).sets_seen
            or fetchmod.plan(cmd.attrs).volatile
        ):
            return None
        self._ahead_key, self._ahead_last = key, max(uids)
        wanted = list(uids)
        for line in self.core.buffered_lines(READ_AHEAD):
            try:
                nxt = parse_command([line])
            except ParseError:
                break
            if not (
                isinstance(nxt, c.Fetch)
                and nxt.uid == cmd.uid
                and nxt.attrs == cmd.attrs
                and nxt.changedsince is None
                and not nxt.seqset.saved
                and (cmd.uid or view.valid_seqset(nxt.seqset))
            ):
                break
            more = view.resolve(nxt.seqset, nxt.uid)
            if len(more) > 4:
                break
            wanted += more
        if walking:
            seq = view.seq_of(max(wanted)) or view.exists
            wanted += [view.uid_of(q) for q in range(seq + 1, min(seq + READ_AHEAD, view.exists) + 1)]
        if len(wanted) == len(uids):
            return None  # nothing pipelined: the ordinary path
        wanted = sorted(set(wanted))
        if wanted[: len(uids)] != sorted(uids):
            return None  # the burst does not start with this command's messages
        rows = await self._block(view, wanted, raw, structure, env_only)
        now = set(uids)
        if rows and rows[-1].uid < wanted[len(uids) - 1]:
            return None  # this command's own messages exceed the bound: ordinary path
        self._ahead = {r.uid: r for r in rows if r.uid not in now}
        return [r for r in rows if r.uid in now]

    def _block(self, view: SelectedView, uids: list[int], raw: bool, structure: bool,
               env_only: bool) -> Awaitable[list[MessageRow]]:
        """One read-ahead block: bodies bounded by CHUNK_BYTES, headers unbounded."""
        return self.store.fetch_upto(view.mailbox_id, uids,
                                     CHUNK_BYTES if raw else 1 << 62, raw=raw,
                                     structure=structure, envelope_only=env_only)

    def _load_next(self, view: SelectedView, raw: bool, structure: bool, env_only: bool) -> None:
        """Start loading the READ_AHEAD messages after those read ahead: a client walking
        the mailbox one FETCH per message then never waits for the database (at most
        two blocks, each bounded by CHUNK_BYTES, are held)."""
        top = max(self._ahead, default=self._ahead_last)
        seq = view.seq_of(top)
        if seq is None:
            return
        uids = [view.uid_of(q) for q in range(seq + 1, min(seq + READ_AHEAD, view.exists) + 1)]
        if not uids:
            return
        self._next = asyncio.ensure_future(self._block(view, uids, raw, structure, env_only))
        # a block never used (the client stopped walking) must not log an unread error
        self._next.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _drop_ahead(self) -> None:
        self._ahead, self._ahead_key = {}, None
        if self._next is not None:
            self._next.cancel()
            self._next = None

    async def _fetch_chunk(
        self,
        cmd: c.Fetch,
        view: SelectedView,
        rows: list[MessageRow],
        attrs: Sequence[c.FetchAttr],
        set_seen: bool,
        has_flags: bool,
        flush: bool = True,
    ) -> bool:
        """Write the FETCH responses of one chunk; False when the command must stop."""
        seen_rows: dict[int, MessageMeta] = {}
        chunk_attrs = attrs
        if set_seen:
            unseen = [r.uid for r in rows if "\\Seen" not in r.flags]
            if unseen:
                res = await self.store.store_flags(view.mailbox_id, unseen, "+", ["\\Seen"])
                seen_rows = {m.uid: m for m in res.updated}
                if not has_flags:  # RFC 3501 §6.4.5: report the change
                    chunk_attrs = (*attrs, c.FetchAttr("FLAGS"))
                if view.condstore:  # RFC 7162 §3.1: the implicit \Seen with UID and MODSEQ
                    names = {a.name for a in chunk_attrs}
                    extra = [c.FetchAttr(n) for n in ("UID", "MODSEQ") if n not in names]
                    chunk_attrs = (*chunk_attrs, *extra)
        if seen_rows:
            for line in view.note_own_flags(seen_rows.values()):
                self.core.send(line)
        if fetchmod.plan(chunk_attrs).has_flags:
            # a keyword another session just set is announced before it is shown
            for line in view.keywords_for(r.flags for r in rows):
                self.core.send(line)
        for row in rows:
            seq = view.seq_of(row.uid)
            if seq is None:
                continue
            if cmd.changedsince is not None and row.modseq <= cmd.changedsince:
                continue  # RFC 7162 §3.1.4.1
            if row.uid in seen_rows:
                m = seen_rows[row.uid]
                row = replace(row, flags=m.flags, modseq=m.modseq)
            if _streams(row, chunk_attrs):
                if not await self._stream_fetch(seq, row, chunk_attrs, view.is_recent(row.uid)):
                    return False
                continue
            try:
                self._untagged(
                    fetchmod.fetch_response(seq, row, chunk_attrs, view.is_recent(row.uid))
                )
            except fetchmod.BinaryUnknownEncoding:
                self._no(cmd.tag, "Unknown Content-Transfer-Encoding", "UNKNOWN-CTE")
                return False
            if self.core.pending_output > OUTPUT_HIGH and not await self._output():
                return False
        del rows
        if not flush and self.core.pending_output <= OUTPUT_HIGH:
            return True  # the driver writes it when the command ends, with later replies
        return await self._output()

    async def _stream_fetch(
        self, seq: int, row: MessageRow, attrs: Sequence[c.FetchAttr], recent: bool
    ) -> bool:
        """One FETCH response written item by item, each handed to the connection (and
        awaited while the client does not read) before the next is rendered: memory
        stays about one item, however many times the client asks for the body."""
        self.core.send_partial(b"* %d FETCH (" % seq)
        for i, a in enumerate(attrs):
            item = fetchmod.fetch_items(row, [a], recent)[0]
            self.core.send_partial(item if i == 0 else b" " + item)
            del item
            if self.core.pending_output > OUTPUT_HIGH and not await self._output():
                return False
        self.core.send_partial(b")\r\n")
        return True

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
        view = self._selected()
        if view.readonly:
            self._no(cmd.tag, "Mailbox is read-only", "READ-ONLY")
            return
        uids = self._target(cmd)
        if uids is None:
            return
        if cmd.unchangedsince is not None:
            self._enable_condstore()  # RFC 7162 §3.1
        res = await self.store.store_flags(
            view.mailbox_id, uids, cmd.mode, cmd.flags, cmd.unchangedsince
        )
        for line in view.note_own_flags(res.updated):
            self.core.send(line)
        # RFC 7162 §3.1: with CONDSTORE a .SILENT STORE still reports the new MODSEQ
        if not cmd.silent or view.condstore:
            for m in res.updated:
                seq = view.seq_of(m.uid)
                if seq is None:
                    continue
                if cmd.silent:
                    items = f"UID {m.uid} MODSEQ ({m.modseq})"
                else:
                    items = view.fetch_items(m.uid, m.flags, m.modseq)
                    if cmd.uid and not view.condstore:
                        items = f"UID {m.uid} " + items
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
        view = self._selected()
        if cmd.charset not in (None, "UTF-8", "US-ASCII"):
            # RFC 3501 §6.4.4: unknown charset → NO [BADCHARSET]
            self._no(cmd.tag, "Unsupported charset", "BADCHARSET (UTF-8 US-ASCII)")
            return
        if uses_modseq(cmd.key):
            self._enable_condstore()  # RFC 7162 §3.1
        full = needs_content(cmd.key)
        max_uid = view.uids[-1] if view.uids else 0
        hits: list[MessageRow] = []
        for chunk in await self._chunks(view.mailbox_id, _search_scope(view, cmd.key), full):
            rows = await self._search_rows(view, chunk, full, cmd.key)
            rows = [
                (replace(r, flags=r.flags | _RECENT) if view.is_recent(r.uid) else r)
                for r in rows
                if view.seq_of(r.uid) is not None
            ]
            seqs = [view.seq_of(r.uid) or 0 for r in rows]
            found: list[MessageRow] = []
            if _scope_is_answer(cmd.key):
                found = rows  # the program is its sets: they chose these rows
            else:
                for i in range(0, len(rows), SEARCH_SLICE):
                    if i:
                        await asyncio.sleep(0)  # a long evaluation lets others run
                    found += search(
                        cmd.key,
                        rows[i : i + SEARCH_SLICE],
                        seqs[i : i + SEARCH_SLICE],
                        view.exists,
                        max_uid,
                        self.saved,
                    )
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
        modseqs = [r.modseq for r in hits] if uses_modseq(cmd.key) else None
        if returns is not None or cmd.returns is None:
            self._untagged(
                search_response(cmd.tag, numbers, uid=cmd.uid, returns=returns, modseqs=modseqs)
            )
        self._drain(allow_expunge=cmd.uid)
        self._ok(cmd.tag, "Search completed")

    # -- SORT and THREAD (RFC 5256) ----------------------------------------------------
    async def _matching(self, view: SelectedView, key: c.SearchKey) -> list[int]:
        """UIDs of the messages matching a search program, ascending."""
        full = needs_content(key)
        max_uid = view.uids[-1] if view.uids else 0
        hits: list[int] = []
        for chunk in await self._chunks(view.mailbox_id, _search_scope(view, key), full):
            rows = await self._search_rows(view, chunk, full, key)
            rows = [
                (replace(r, flags=r.flags | _RECENT) if view.is_recent(r.uid) else r)
                for r in rows
                if view.seq_of(r.uid) is not None
            ]
            if _scope_is_answer(key):
                hits += [r.uid for r in rows]
                continue
            for i in range(0, len(rows), SEARCH_SLICE):
                await asyncio.sleep(0)  # a long evaluation lets other clients run
                part = rows[i : i + SEARCH_SLICE]
                seqs = [view.seq_of(r.uid) or 0 for r in part]
                hits += [
                    r.uid for r in search(key, part, seqs, view.exists, max_uid, self.saved)
                ]
        return hits

    async def _search_rows(
        self, view: SelectedView, uids: list[int], full: bool, key: c.SearchKey
    ) -> list[MessageRow]:
        """The rows a program is evaluated on; none from the store when it only tests
        UIDs and sequence numbers (``UID SEARCH UID <64 KB set>`` is answered from the
        view alone)."""
        if _ONLY_NUMBERS.issuperset(_ops(key)):
            return [MessageRow(u, frozenset(), 0, _EPOCH, 0, None, None) for u in uids]
        return await self.store.fetch(view.mailbox_id, uids, raw=full, structure=full)

    async def _sort_infos(self, view: SelectedView, uids: list[int]) -> list[SortInfo]:
        out: list[SortInfo] = []
        for i in range(0, len(uids), CHUNK_ROWS):
            for uid, date, size, header in await self.store.headers(
                view.mailbox_id, uids[i : i + CHUNK_ROWS]
            ):
                seq = view.seq_of(uid)
                if seq is not None:
                    out.append(sort_info(uid, seq, date, size, header))
            await asyncio.sleep(0)
        return out

    def _charset_ok(self, tag: str, charset: str) -> bool:
        if charset in ("UTF-8", "US-ASCII"):
            return True
        self._no(tag, "Unsupported charset", "BADCHARSET (UTF-8 US-ASCII)")  # RFC 5256 §3
        return False

    async def _cmd_sort(self, cmd: c.Sort, now: datetime) -> None:
        view = self.view
        assert view is not None
        if not self._charset_ok(cmd.tag, cmd.charset):
            return
        infos = await self._sort_infos(view, await self._matching(view, cmd.key))
        ordered = sort_messages(infos, cmd.criteria)
        nums = [i.uid if cmd.uid else i.seq for i in ordered]
        if cmd.returns is not None:  # RFC 5267 ESORT
            self._untagged(esort_response(cmd.tag, nums, uid=cmd.uid, returns=cmd.returns))
        else:
            self._untagged("SORT" + "".join(f" {n}" for n in nums))
        self._drain(allow_expunge=cmd.uid)
        self._ok(cmd.tag, "Sort completed")

    async def _cmd_thread(self, cmd: c.Thread, now: datetime) -> None:
        view = self.view
        assert view is not None
        if not self._charset_ok(cmd.tag, cmd.charset):
            return
        infos = await self._sort_infos(view, await self._matching(view, cmd.key))
        if cmd.algorithm == "REFERENCES":
            roots = thread_references(infos)
        else:
            roots = thread_orderedsubject(infos)
        text = format_threads(roots, (lambda i: i.uid) if cmd.uid else (lambda i: i.seq))
        self._untagged("THREAD " + text if text else "THREAD")
        self._drain(allow_expunge=cmd.uid)
        self._ok(cmd.tag, "Thread completed")

    async def _copy_move(self, cmd: c.Copy | c.Move, move: bool) -> None:
        view = self._selected()
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
        if move:
            # RFC 6851 §4.3: COPYUID goes in an untagged OK before the expunges
            self.core.send(UntaggedStatus("OK", "Moved", code))
            for line in view.expunge_now(res.source_uids):
                self.core.send(line)
        # into the selected mailbox itself: the copies are new messages of this view
        # (RFC 3501 §7.3.1: EXISTS), announced with the reply as APPEND does
        await self._absorb(await self.store.changes_since(view.mailbox_id, view.synced))
        # a COPY by sequence number keeps the numbers stable (no EXPUNGE mid-command)
        self._drain(allow_expunge=move or cmd.uid)
        if move:
            self._ok(cmd.tag, "Move completed")
        else:
            self._ok(cmd.tag, "Copied", code)

    async def _cmd_copy(self, cmd: c.Copy, now: datetime) -> None:
        await self._copy_move(cmd, False)

    async def _cmd_move(self, cmd: c.Move, now: datetime) -> None:
        await self._copy_move(cmd, True)

    async def _cmd_expunge(self, cmd: c.Expunge, now: datetime) -> None:
        view = self._selected()
        if view.readonly:
            self._no(cmd.tag, "Mailbox is read-only", "READ-ONLY")
            return
        only = view.resolve(cmd.uid_set, True) if cmd.uid_set is not None else None
        gone = await self.store.expunge(view.mailbox_id, only)
        for line in view.expunge_now(gone):
            self.core.send(line)
        self._drain()
        self._ok(cmd.tag, "Expunge completed")
