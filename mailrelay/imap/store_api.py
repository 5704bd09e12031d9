"""The boundary between the IMAP server and the mail store (implemented over PostgreSQL).

Everything here is data (frozen dataclasses) or a ``typing.Protocol``; the
IMAP core and the pure execution helpers depend only on this module.
Mailbox names are Unicode with "/" as hierarchy delimiter; flags are IMAP
spellings (``\\Seen``, ``$Junk``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

__all__ = [
    "MailboxInfo",
    "MessageMeta",
    "MessageRow",
    "SelectResult",
    "StoreResult",
    "CopyResult",
    "AppendResult",
    "QuotaResource",
    "MessageAdded",
    "FlagsChanged",
    "MessageExpunged",
    "KeywordsDefined",
    "Change",
    "MailStore",
    "StoreError",
]


class StoreError(Exception):
    """A store failure with the IMAP reply it deserves, e.g. NO [TRYCREATE]."""

    def __init__(self, text: str, code: str | None = None, status: str = "NO") -> None:
        super().__init__(text)
        self.text, self.code, self.status = text, code, status


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    name: str
    attributes: frozenset[str] = frozenset()  # \Noselect \HasChildren \Sent ... (RFC 6154)
    subscribed: bool = False
    mailbox_id: int = 0


@dataclass(frozen=True, slots=True)
class MessageMeta:
    """What SELECT needs per message: enough to build the UID ↔ seq map."""

    uid: int
    flags: frozenset[str]
    modseq: int = 1


@dataclass(frozen=True, slots=True)
class MessageRow:
    """A stored message as FETCH/SEARCH need it.

    ``structure`` is :func:`mailrelay.mime.parse_message` output, stored at
    delivery. ``raw`` is None when the caller did not ask for the bytes.
    """

    uid: int
    flags: frozenset[str]
    modseq: int
    internaldate: datetime
    size: int
    structure: dict[str, Any] | None = None
    raw: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class SelectResult:
    mailbox_id: int
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: Sequence[MessageMeta]
    flags: tuple[str, ...] = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
    permanent_flags: tuple[str, ...] = (
        "\\Answered",
        "\\Flagged",
        "\\Deleted",
        "\\Seen",
        "\\Draft",
        "\\*",
    )
    readonly: bool = False
    #: UIDs in [recent_from, uidnext) are \Recent in this session (RFC 3501 §2.3.2); for
    #: SELECT the store has claimed them, for EXAMINE nobody has claimed them yet
    recent_from: int | None = None
    #: every keyword ever used in the mailbox, in the order they were first used (the
    #: mailbox's keyword list: FLAGS and PERMANENTFLAGS name them, RFC 3501 §7.2.6)
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StoreResult:
    """``updated``: rows after the change; ``modified``: UIDs failing UNCHANGEDSINCE."""

    updated: Sequence[MessageMeta]
    modified: Sequence[int] = ()
    highestmodseq: int = 0


@dataclass(frozen=True, slots=True)
class CopyResult:
    """For COPYUID (RFC 4315 §3): source and destination UIDs in matching order."""

    uidvalidity: int
    source_uids: Sequence[int]
    dest_uids: Sequence[int]


@dataclass(frozen=True, slots=True)
class AppendResult:
    uidvalidity: int
    uid: int  # APPENDUID (RFC 4315 §3)


@dataclass(frozen=True, slots=True)
class NewMessage:
    """One message of a MULTIAPPEND (RFC 3502), ready to store."""

    raw: bytes
    flags: tuple[str, ...]
    internaldate: datetime
    structure: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MultiAppendResult:
    uidvalidity: int
    uids: Sequence[int]  # APPENDUID with a uid-set (RFC 4315 §3)


@dataclass(frozen=True, slots=True)
class QuotaResource:
    name: str  # STORAGE (in KiB, RFC 9208 §5.1) or MESSAGE
    usage: int
    limit: int


# --- change events (the store publishes them; the selected view consumes them) -------


@dataclass(frozen=True, slots=True)
class MessageAdded:
    uid: int
    flags: frozenset[str]
    modseq: int


@dataclass(frozen=True, slots=True)
class FlagsChanged:
    uid: int
    flags: frozenset[str]
    modseq: int


@dataclass(frozen=True, slots=True)
class MessageExpunged:
    uid: int
    modseq: int


@dataclass(frozen=True, slots=True)
class KeywordsDefined:
    """The mailbox's keyword list grew at ``modseq``: ``keywords`` is the whole list.

    The list only grows, and it grows in the transaction that first sets a keyword on a
    message, so a batch that shows a message with a new keyword also carries the list
    that names it (FLAGS comes before that FETCH, RFC 3501 §7.2.6)."""

    keywords: tuple[str, ...]
    modseq: int


Change = MessageAdded | FlagsChanged | MessageExpunged | KeywordsDefined


class MailStore(Protocol):
    """Per-user mail store. Raises :class:`StoreError` for expected failures."""

    async def list_mailboxes(self, user: str) -> list[MailboxInfo]: ...

    async def create_mailbox(
        self, user: str, name: str, special_use: Iterable[str] = ()
    ) -> None: ...

    async def delete_mailbox(self, user: str, name: str) -> None: ...

    async def rename_mailbox(self, user: str, old: str, new: str) -> None: ...

    async def set_subscribed(self, user: str, name: str, subscribed: bool) -> None: ...

    async def subscriptions(self, user: str) -> list[str]:
        """Subscribed names (existing or not), INBOX first (RFC 3501 §6.3.6)."""
        ...

    async def select(self, user: str, name: str, readonly: bool) -> SelectResult: ...

    async def status(self, user: str, name: str, items: Iterable[str]) -> dict[str, int]: ...

    async def claim_recent(self, mailbox_id: int, upto: int) -> int | None:
        """Claim the not yet claimed UIDs below ``upto`` as \\Recent for the caller.

        Returns the first UID claimed (the caller owns ``[first, upto)``) or None when
        another session already has them; atomic across sessions and processes.
        """
        ...

    async def fetch(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        *,
        raw: bool,
        structure: bool,
        envelope_only: bool = False,
    ) -> list[MessageRow]:
        """Rows for ``uids`` (ascending). ``envelope_only``: a structure holding just
        ``{"env": ...}`` is enough (header sync)."""
        ...

    async def sizes(self, mailbox_id: int, uids: Sequence[int]) -> list[tuple[int, int]]:
        """(uid, RFC822.SIZE) for ``uids`` (ascending): how FETCH splits body loads."""
        ...

    async def store_flags(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        mode: str,
        flags: Iterable[str],
        unchangedsince: int | None = None,
    ) -> StoreResult: ...

    async def append(
        self,
        user: str,
        name: str,
        message: bytes,
        flags: Iterable[str],
        internaldate: datetime,
        structure: dict[str, Any],
    ) -> AppendResult: ...

    async def fetch_upto(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        max_bytes: int,
        *,
        raw: bool,
        structure: bool,
        envelope_only: bool = False,
    ) -> list[MessageRow]:
        """The first rows of ``uids`` (ascending) whose sizes add up to at most
        ``max_bytes``, and always at least one."""
        ...

    async def headers(
        self, mailbox_id: int, uids: Sequence[int]
    ) -> list[tuple[int, datetime, int, bytes]]:
        """(uid, internaldate, size, header block) per message (SORT, THREAD)."""
        ...

    async def append_many(
        self, user: str, name: str, messages: Sequence[NewMessage]
    ) -> MultiAppendResult:
        """All of ``messages`` in one transaction, or none (RFC 3502 §6.3.11)."""
        ...

    async def copy(
        self, mailbox_id: int, uids: Sequence[int], user: str, dest: str
    ) -> CopyResult: ...

    async def move(
        self, mailbox_id: int, uids: Sequence[int], user: str, dest: str
    ) -> CopyResult: ...

    async def expunge(self, mailbox_id: int, uids: Sequence[int] | None = None) -> list[int]:
        """Remove \\Deleted messages (only among ``uids`` if given); return their UIDs."""
        ...

    async def changes_since(self, mailbox_id: int, modseq: int) -> list[Change]: ...

    async def expunged_since(self, mailbox_id: int, modseq: int) -> list[int]:
        """UIDs expunged after ``modseq`` (RFC 7162 §3.2.5 QRESYNC VANISHED (EARLIER))."""
        ...

    async def quota(self, user: str, root: str) -> list[QuotaResource]: ...
