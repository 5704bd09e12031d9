"""Typed IMAP client commands (frozen dataclasses), one per RFC 3501 §6 command.

``mailbox`` fields hold the decoded Unicode name (modified UTF-7 already
decoded, RFC 3501 §5.1.3) with ``INBOX`` normalised to upper case (§5.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from mailrelay.mime.sections import Section

from .seqset import SequenceSet
from .spool import Spool

# fmt: off
__all__ = [
    "Command", "Capability", "Noop", "Logout", "StartTLS", "Login", "Authenticate",
    "Select", "Create", "Delete", "Rename", "Subscribe", "Unsubscribe", "List", "Lsub",
    "Status", "Append", "AppendMessage", "Check", "Close", "Unselect", "Expunge", "Search", "SearchKey",
    "Fetch", "FetchAttr", "Store", "Copy", "Move", "Idle", "Enable", "Id", "Namespace",
    "GetQuota", "GetQuotaRoot", "Compress", "QResyncParams", "Sort", "Thread",
]
# fmt: on


@dataclass(frozen=True, slots=True)
class Command:
    tag: str

    #: IMAP name as it appears on the wire, for logs and "Command not valid" texts.
    @property
    def name(self) -> str:
        return type(self).__name__.upper()


@dataclass(frozen=True, slots=True)
class Capability(Command):
    pass


@dataclass(frozen=True, slots=True)
class Noop(Command):
    pass


@dataclass(frozen=True, slots=True)
class Logout(Command):
    pass


@dataclass(frozen=True, slots=True)
class StartTLS(Command):
    pass


@dataclass(frozen=True, slots=True)
class Login(Command):
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Authenticate(Command):
    """``initial_response`` is None when absent, b"" for ``=`` (RFC 4959)."""

    mechanism: str
    initial_response: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class QResyncParams:
    """RFC 7162 §3.2.5 ``(QRESYNC (uidvalidity modseq [known-uids [seq-match]]))``."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(frozen=True, slots=True)
class Select(Command):
    """SELECT, or EXAMINE when ``readonly``."""

    mailbox: str
    readonly: bool = False
    condstore: bool = False
    qresync: QResyncParams | None = None

    @property
    def name(self) -> str:
        return "EXAMINE" if self.readonly else "SELECT"


@dataclass(frozen=True, slots=True)
class Create(Command):
    mailbox: str
    special_use: tuple[str, ...] = ()  # RFC 6154 §3 CREATE (USE (\Sent))


@dataclass(frozen=True, slots=True)
class Delete(Command):
    mailbox: str


@dataclass(frozen=True, slots=True)
class Rename(Command):
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Subscribe(Command):
    mailbox: str


@dataclass(frozen=True, slots=True)
class Unsubscribe(Command):
    mailbox: str


@dataclass(frozen=True, slots=True)
class List(Command):
    """LIST incl. RFC 5258 selection options and RETURN options (upper-case)."""

    reference: str
    patterns: tuple[str, ...]
    selection: tuple[str, ...] = ()
    returns: tuple[str, ...] = ()
    status_items: tuple[str, ...] = ()  # RFC 5819 RETURN (STATUS (...))


@dataclass(frozen=True, slots=True)
class Lsub(Command):
    reference: str
    pattern: str


@dataclass(frozen=True, slots=True)
class Status(Command):
    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AppendMessage:
    """One message of a MULTIAPPEND (RFC 3502); ``message`` may be spooled to disk."""

    flags: tuple[str, ...]
    date: datetime | None
    message: bytes | Spool = field(repr=False)
    binary: bool = False


@dataclass(frozen=True, slots=True)
class Append(Command):
    """APPEND; the first message inline, further MULTIAPPEND messages in ``extra``.

    ``message`` is a :class:`Spool` when the literal was larger than the spool limit.
    """

    mailbox: str
    flags: tuple[str, ...]
    date: datetime | None
    message: bytes | Spool = field(repr=False)
    binary: bool = False  # literal8 ~{n} (RFC 3516)
    extra: tuple[AppendMessage, ...] = ()

    def messages(self) -> list[AppendMessage]:
        return [AppendMessage(self.flags, self.date, self.message, self.binary), *self.extra]


@dataclass(frozen=True, slots=True)
class Check(Command):
    pass


@dataclass(frozen=True, slots=True)
class Close(Command):
    pass


@dataclass(frozen=True, slots=True)
class Unselect(Command):
    pass


@dataclass(frozen=True, slots=True)
class Expunge(Command):
    """EXPUNGE, or UID EXPUNGE <uid_set> (RFC 4315 §2.1)."""

    uid_set: SequenceSet | None = None


@dataclass(frozen=True, slots=True)
class SearchKey:
    """One node of a search program.

    ``op`` is one of: ALL, AND, OR, NOT, FLAG, SEQ, UID, HEADER, BODY, TEXT,
    BEFORE, ON, SINCE, SENTBEFORE, SENTON, SENTSINCE, LARGER, SMALLER, MODSEQ.
    RFC 3501 shorthands are normalised: SEEN → FLAG \\Seen, UNSEEN → NOT FLAG
    \\Seen, FROM x → HEADER FROM x, NEW → AND(FLAG \\Recent, NOT FLAG \\Seen)...
    """

    op: str
    args: tuple[object, ...] = ()


@dataclass(frozen=True, slots=True)
class Search(Command):
    key: SearchKey
    charset: str | None = None
    uid: bool = False
    returns: tuple[str, ...] | None = None  # RFC 4731 ESEARCH, () means ALL

    @property
    def name(self) -> str:
        return "UID SEARCH" if self.uid else "SEARCH"


@dataclass(frozen=True, slots=True)
class Sort(Command):
    """RFC 5256 SORT: ``criteria`` are ``(key, reverse)`` pairs, most significant first."""

    criteria: tuple[tuple[str, bool], ...]
    charset: str
    key: SearchKey
    uid: bool = False
    returns: tuple[str, ...] | None = None  # RFC 5267 ESORT: SORT RETURN (MIN MAX ...)

    @property
    def name(self) -> str:
        return "UID SORT" if self.uid else "SORT"


@dataclass(frozen=True, slots=True)
class Thread(Command):
    """RFC 5256 THREAD; ``algorithm`` is ORDEREDSUBJECT or REFERENCES."""

    algorithm: str
    charset: str
    key: SearchKey
    uid: bool = False

    @property
    def name(self) -> str:
        return "UID THREAD" if self.uid else "THREAD"


@dataclass(frozen=True, slots=True)
class FetchAttr:
    """A fetch item: ``name`` is upper-case (``BODY``, ``BINARY``, ``FLAGS``...).

    ``section`` is set for BODY[...] / BINARY[...] / BINARY.SIZE[...];
    ``partial`` is ``(start, length)`` from ``<start.length>``.
    """

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None
    peek: bool = False

    def response_name(self) -> str:
        """Item name as echoed in the FETCH response (RFC 3501 §7.4.2)."""
        if self.section is None:
            return self.name
        s = f"{self.name}[{self.section}]"
        if self.partial is not None:
            s += f"<{self.partial[0]}>"
        return s


@dataclass(frozen=True, slots=True)
class Fetch(Command):
    seqset: SequenceSet
    attrs: tuple[FetchAttr, ...]
    uid: bool = False
    changedsince: int | None = None  # RFC 7162 §3.1.4.1
    vanished: bool = False  # RFC 7162 §3.2.6

    @property
    def name(self) -> str:
        return "UID FETCH" if self.uid else "FETCH"


@dataclass(frozen=True, slots=True)
class Store(Command):
    """``mode`` is "" (replace), "+" or "-"."""

    seqset: SequenceSet
    mode: str
    flags: tuple[str, ...]
    silent: bool = False
    uid: bool = False
    unchangedsince: int | None = None  # RFC 7162 §3.1.3

    @property
    def name(self) -> str:
        return "UID STORE" if self.uid else "STORE"


@dataclass(frozen=True, slots=True)
class Copy(Command):
    seqset: SequenceSet
    mailbox: str
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Move(Command):
    seqset: SequenceSet
    mailbox: str
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Idle(Command):
    pass


@dataclass(frozen=True, slots=True)
class Enable(Command):
    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Id(Command):
    params: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True, slots=True)
class Namespace(Command):
    pass


@dataclass(frozen=True, slots=True)
class GetQuota(Command):
    root: str


@dataclass(frozen=True, slots=True)
class GetQuotaRoot(Command):
    mailbox: str


@dataclass(frozen=True, slots=True)
class Compress(Command):
    mechanism: str
