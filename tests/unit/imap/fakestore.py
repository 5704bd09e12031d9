"""In-memory ``MailStore`` for driving ``ImapSession`` without a database."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from mailrelay.imap.store_api import (
    AppendResult,
    Change,
    CopyResult,
    FlagsChanged,
    MailboxInfo,
    MessageAdded,
    MessageExpunged,
    MessageMeta,
    MessageRow,
    MultiAppendResult,
    QuotaResource,
    SelectResult,
    StoreError,
    StoreResult,
)


@dataclass
class Box:
    id: int
    name: str
    special: frozenset[str] = frozenset()
    subscribed: bool = False
    uidvalidity: int = 1000
    uidnext: int = 1
    recent_uid: int = 1
    rows: dict[int, MessageRow] = field(default_factory=dict)
    log: list[Change] = field(default_factory=list)
    expunged: list[tuple[int, int]] = field(default_factory=list)  # (uid, modseq)


class FakeStore:
    def __init__(self) -> None:
        self.modseq = 1
        self.boxes: dict[str, Box] = {}
        self._next_id = 1
        self.subs: set[str] = set()  # subscribed names, independent of mailboxes
        for name, special in (("INBOX", ()), ("Sent", ("\\Sent",)), ("Trash", ("\\Trash",))):
            self._make(name, special)
            self.subs.add(name)

    def _make(self, name: str, special=()) -> Box:
        box = Box(self._next_id, name, frozenset(special))
        self._next_id += 1
        self.boxes[name] = box
        return box

    def _box(self, name: str) -> Box:
        if name not in self.boxes:
            raise StoreError("No such mailbox", "TRYCREATE")
        return self.boxes[name]

    def _by_id(self, mid: int) -> Box:
        return next(b for b in self.boxes.values() if b.id == mid)

    def _bump(self) -> int:
        self.modseq += 1
        return self.modseq

    def deliver(self, name: str, raw: bytes, flags=(), date: datetime | None = None,
                normalize: bool = True) -> int:
        from mailrelay.mime import normalize_crlf, parse_message

        raw = normalize_crlf(raw) if normalize else raw
        box = self._box(name)
        uid = box.uidnext
        box.uidnext += 1
        ms = self._bump()
        box.rows[uid] = MessageRow(
            uid,
            frozenset(flags),
            ms,
            date or datetime(2024, 1, 1),
            len(raw),
            parse_message(raw),
            raw,
        )
        box.log.append(MessageAdded(uid, frozenset(flags), ms))
        return uid

    async def list_mailboxes(self, user):
        return [MailboxInfo(b.name, b.special, b.name in self.subs, b.id)
                for b in self.boxes.values()]

    async def subscriptions(self, user):
        return sorted(self.subs, key=lambda n: (n != "INBOX", n))

    async def create_mailbox(self, user, name, special_use=()):
        if name in self.boxes:
            raise StoreError("Mailbox exists", "ALREADYEXISTS")
        self._make(name, special_use)

    async def delete_mailbox(self, user, name):
        self._box(name)
        del self.boxes[name]

    async def rename_mailbox(self, user, old, new):
        box = self._box(old)
        del self.boxes[old]
        box.name = new
        self.boxes[new] = box

    async def set_subscribed(self, user, name, subscribed):
        if not subscribed:
            self.subs.discard(name)
            return
        self._box(name)
        self.subs.add(name)

    async def select(self, user, name, readonly):
        b = self._box(name)
        metas = [MessageMeta(r.uid, r.flags, r.modseq) for r in b.rows.values()]
        hms = max([r.modseq for r in b.rows.values()] + [1])
        recent_from = b.recent_uid
        if not readonly:
            first = await self.claim_recent(b.id, b.uidnext)
            recent_from = b.uidnext if first is None else first
        return SelectResult(
            b.id, b.uidvalidity, b.uidnext, hms, metas, readonly=readonly, recent_from=recent_from
        )

    async def claim_recent(self, mailbox_id, upto):
        b = self._by_id(mailbox_id)
        if b.recent_uid >= upto:
            return None
        first, b.recent_uid = b.recent_uid, upto
        return first

    async def status(self, user, name, items):
        b = self._box(name)
        vals = {
            "MESSAGES": len(b.rows),
            "UIDNEXT": b.uidnext,
            "UIDVALIDITY": b.uidvalidity,
            "UNSEEN": sum("\\Seen" not in r.flags for r in b.rows.values()),
            "RECENT": sum(u >= b.recent_uid for u in b.rows),
            "HIGHESTMODSEQ": self.modseq,
            "SIZE": sum(r.size for r in b.rows.values()),
        }
        return {k: v for k, v in vals.items() if k in items}

    async def fetch(self, mailbox_id, uids, *, raw, structure, envelope_only=False):
        b = self._by_id(mailbox_id)
        return [b.rows[u] for u in uids if u in b.rows]

    async def sizes(self, mailbox_id, uids):
        b = self._by_id(mailbox_id)
        return [(u, b.rows[u].size) for u in uids if u in b.rows]

    async def store_flags(self, mailbox_id, uids, mode, flags, unchangedsince=None):
        b = self._by_id(mailbox_id)
        updated, modified = [], []
        for u in uids:
            r = b.rows.get(u)
            if r is None:
                continue
            if unchangedsince is not None and r.modseq > unchangedsince:
                modified.append(u)
                continue
            new = {"+": r.flags | set(flags), "-": r.flags - set(flags)}.get(mode, frozenset(flags))
            ms = self._bump()
            b.rows[u] = MessageRow(
                u, frozenset(new), ms, r.internaldate, r.size, r.structure, r.raw
            )
            b.log.append(FlagsChanged(u, frozenset(new), ms))
            updated.append(MessageMeta(u, frozenset(new), ms))
        return StoreResult(updated, modified, self.modseq)

    async def append(self, user, name, message, flags, internaldate, structure):
        uid = self.deliver(name, message, flags, internaldate, normalize=False)
        return AppendResult(self._box(name).uidvalidity, uid)

    async def fetch_upto(self, mailbox_id, uids, max_bytes, *, raw, structure,
                         envelope_only=False):
        rows = await self.fetch(mailbox_id, uids, raw=raw, structure=structure)
        out, total = [], 0
        for r in rows:
            if out and total + r.size > max_bytes:
                break
            out.append(r)
            total += r.size
        return out

    async def headers(self, mailbox_id, uids):
        rows = self._by_id(mailbox_id).rows
        out = []
        for u in sorted(uids):
            r = rows.get(u)
            if r is not None:
                raw = r.raw or b""
                end = raw.find(b"\r\n\r\n")
                out.append((u, r.internaldate, r.size, raw[: end + 4] if end >= 0 else raw))
        return out

    async def append_many(self, user, name, messages):
        self._box(name)  # NONEXISTENT before anything is stored (all or nothing)
        uids = [self.deliver(name, m.raw, m.flags, m.internaldate) for m in messages]
        return MultiAppendResult(self._box(name).uidvalidity, uids)

    async def copy(self, mailbox_id, uids, user, dest):
        src, dst = self._by_id(mailbox_id), self._box(dest)
        new = [self.deliver(dest, src.rows[u].raw or b"", src.rows[u].flags) for u in uids]
        return CopyResult(dst.uidvalidity, list(uids), new)

    async def move(self, mailbox_id, uids, user, dest):
        res = await self.copy(mailbox_id, uids, user, dest)
        src = self._by_id(mailbox_id)
        for u in uids:
            del src.rows[u]
            ms = self._bump()
            src.expunged.append((u, ms))
            src.log.append(MessageExpunged(u, ms))
        return res

    async def expunge(self, mailbox_id, uids=None):
        b = self._by_id(mailbox_id)
        gone = [
            u
            for u, r in sorted(b.rows.items())
            if "\\Deleted" in r.flags and (uids is None or u in uids)
        ]
        for u in gone:
            del b.rows[u]
            ms = self._bump()
            b.expunged.append((u, ms))
            b.log.append(MessageExpunged(u, ms))
        return gone

    async def changes_since(self, mailbox_id, modseq):
        return [ch for ch in self._by_id(mailbox_id).log if ch.modseq > modseq]

    async def expunged_since(self, mailbox_id, modseq):
        return [u for u, ms in self._by_id(mailbox_id).expunged if ms > modseq]

    async def quota(self, user, root):
        return [QuotaResource("STORAGE", 10, 1024)]


class FakeAuth:
    async def login(self, user: str, password: str) -> str | None:
        return user.lower() if password == "secret" else None


class FakeScramAuth(FakeAuth):
    """FakeAuth plus the SASL module: one user "alice" (password "secret"); records the
    outcomes of proof checks (the directory's part, done here without a database)."""

    binding = None

    def __init__(self) -> None:
        from directory.scram import derive_keys

        self.keys = {m: derive_keys(m, "secret", b"salt" * 4, 4096) for m in
                     ("SCRAM-SHA-256", "SCRAM-SHA-1")}
        self.records: list[tuple[str, bool]] = []

    def prepare(self, name: str) -> str:
        return name.lower()

    async def advance(self, server, step):
        from directory.sasl import CheckPassword, CheckProof, NeedKeys
        from directory.scram import derive_keys

        while isinstance(step, CheckPassword | NeedKeys | CheckProof):
            if isinstance(step, CheckPassword):
                step = server.verdict(await self.login(step.username, step.password) is not None)
            elif isinstance(step, NeedKeys):
                known = step.username == "alice"
                step = server.keys(self.keys[step.mechanism] if known else
                                   derive_keys(step.mechanism, "x", b"0" * 16, 4096))
            else:
                ok = server.check_proof() and step.username == "alice"
                if step.username == "alice":
                    self.records.append(("alice", ok))
                step = server.proof_result(ok)
        return step
