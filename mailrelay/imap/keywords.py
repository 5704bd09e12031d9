"""A mailbox's keyword list: how flags a client names meet the list, and its bounds.

Pure functions (no I/O); the store calls them with the list it read under the mailbox
lock. RFC 3501 §9: atoms, flag keywords among them, are case-insensitive, so a keyword
named in another case takes the spelling the mailbox already uses. A mailbox holds at
most ``max_keywords`` keywords of at most :data:`MAX_KEYWORD_LENGTH` octets; a command
that would go beyond gets ``NO [LIMIT]`` (RFC 5530 §3) and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .store_api import StoreError

__all__ = ["MAX_KEYWORD_LENGTH", "DEFAULT_MAX_KEYWORDS", "is_keyword", "admit"]

#: longest keyword accepted (Dovecot's mail_max_keyword_length is 50)
MAX_KEYWORD_LENGTH = 128
#: default of ``imap.max_keywords``
DEFAULT_MAX_KEYWORDS = 256


def is_keyword(flag: str) -> bool:
    """RFC 3501 §2.3.2: a keyword is a flag that does not begin with a backslash."""
    return not flag.startswith("\\")


def admit(
    flags: Iterable[str], known: Sequence[str], max_keywords: int | None
) -> tuple[tuple[str, ...], list[str]]:
    """``flags`` spelled as the mailbox spells them, and the keywords new to it.

    Raises ``StoreError(NO [LIMIT])`` when a keyword is too long or the new ones would
    take the mailbox beyond ``max_keywords`` (None: no check, for flags being removed).
    """
    spelling = {k.lower(): k for k in known}
    out: list[str] = []
    fresh: list[str] = []
    for f in flags:
        if is_keyword(f):
            if max_keywords is not None and len(f.encode()) > MAX_KEYWORD_LENGTH:
                raise StoreError(f"Keyword longer than {MAX_KEYWORD_LENGTH} octets", "LIMIT")
            low = f.lower()
            if low in spelling:
                f = spelling[low]
            else:
                spelling[low] = f
                fresh.append(f)
        if f not in out:
            out.append(f)
    if max_keywords is not None and fresh and len(known) + len(fresh) > max_keywords:
        raise StoreError(
            f"Too many keywords in this mailbox (at most {max_keywords})", "LIMIT"
        )
    return tuple(out), fresh

