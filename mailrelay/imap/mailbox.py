"""Pure helpers for mailbox-level replies: SELECT, STATUS, LIST/LSUB, capabilities."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from .proto.response import Untagged, UntaggedStatus, mailbox_name
from .store_api import MailboxInfo, SelectResult
from .view import SelectedView

__all__ = [
    "DELIMITER",
    "CAPABILITIES",
    "capabilities",
    "select_responses",
    "status_response",
    "list_match",
    "list_responses",
]

DELIMITER = "/"

#: Everything the core parses, advertised after authentication (RFC 3501 §7.2.1).
CAPABILITIES: tuple[str, ...] = (
    "IMAP4rev1",
    "LITERAL+",
    "SASL-IR",
    "ID",
    "ENABLE",
    "IDLE",
    "NAMESPACE",
    "UIDPLUS",
    "MOVE",
    "UNSELECT",
    "CHILDREN",
    "SPECIAL-USE",
    "CREATE-SPECIAL-USE",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "ESEARCH",
    "CONDSTORE",
    "QRESYNC",
    "QUOTA",
    "BINARY",
    "COMPRESS=DEFLATE",
    "MULTIAPPEND",  # RFC 3502
    "SORT",  # RFC 5256
    "ESORT",  # RFC 5267 §3.2
    "THREAD=ORDEREDSUBJECT",
    "THREAD=REFERENCES",
    "UTF8=ACCEPT",  # RFC 6855
)


def capabilities(
    state_authenticated: bool,
    *,
    tls: bool,
    sasl: Iterable[str] = ("PLAIN",),
    appendlimit: int | None = None,
    starttls_available: bool = True,
) -> list[str]:
    """The CAPABILITY list for the session's current situation."""
    caps = list(CAPABILITIES)
    if not state_authenticated:
        # RFC 4978 §3 lets COMPRESS come before login; we accept (and advertise) it
        # only after authentication, so no unauthenticated peer can make us inflate
        caps.remove("COMPRESS=DEFLATE")
        if not tls:
            if starttls_available:
                caps.append("STARTTLS")
            # RFC 3501 §6.2.3 / RFC 8314: no clear-text passwords without TLS
            caps.append("LOGINDISABLED")
        else:
            caps += [f"AUTH={m}" for m in sasl]
    if appendlimit is not None:
        caps.append(f"APPENDLIMIT={appendlimit}")  # RFC 7889
    return caps


def select_responses(result: SelectResult, view: SelectedView) -> list[Untagged | UntaggedStatus]:
    """Untagged replies of SELECT/EXAMINE (RFC 3501 §6.3.1, RFC 7162 §3.1.2)."""
    out: list[Untagged | UntaggedStatus] = [
        Untagged("FLAGS (" + " ".join(result.flags) + ")"),
        Untagged(f"{view.exists} EXISTS"),
        Untagged(f"{view.recent_count()} RECENT"),
    ]
    unseen = next((i + 1 for i, u in enumerate(view.uids) if "\\Seen" not in view.flags[u]), None)
    if unseen is not None:
        out.append(UntaggedStatus("OK", "First unseen", f"UNSEEN {unseen}"))
    perm = "()" if result.readonly else "(" + " ".join(result.permanent_flags) + ")"
    out += [
        UntaggedStatus("OK", "Flags permitted", f"PERMANENTFLAGS {perm}"),
        UntaggedStatus("OK", "UIDs valid", f"UIDVALIDITY {result.uidvalidity}"),
        UntaggedStatus("OK", "Predicted next UID", f"UIDNEXT {result.uidnext}"),
    ]
    if view.condstore:
        out.append(UntaggedStatus("OK", "Highest", f"HIGHESTMODSEQ {result.highestmodseq}"))
    return out


def select_tagged_code(readonly: bool) -> str:
    return "READ-ONLY" if readonly else "READ-WRITE"


def status_response(name: str, values: Mapping[str, int], items: Sequence[str]) -> Untagged:
    """``STATUS "name" (MESSAGES 3 UNSEEN 1)`` in the requested order (RFC 3501 §7.2.4)."""
    body = " ".join(f"{i} {values[i]}" for i in items if i in values)
    return Untagged(b"STATUS " + mailbox_name(name) + b" (" + body.encode() + b")")


def _pattern_re(pattern: str, flags: int = 0) -> re.Pattern[str]:
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append(f"[^{re.escape(DELIMITER)}]*")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out) + r"\Z", re.DOTALL | flags)


def list_match(reference: str, pattern: str, name: str) -> bool:
    """RFC 3501 §6.3.8 wildcard match of ``reference+pattern`` against ``name``.

    INBOX matches case-insensitively (RFC 3501 §5.1).
    """
    flags = re.IGNORECASE if name == "INBOX" else 0
    return bool(_pattern_re(reference + pattern, flags).match(name))


def list_responses(
    mailboxes: Sequence[MailboxInfo],
    reference: str,
    patterns: Sequence[str],
    *,
    command: str = "LIST",
    subscribed_only: bool = False,
    special_use_only: bool = False,
    return_special_use: bool = True,
    return_children: bool = True,
) -> list[Untagged]:
    """LIST/LSUB replies with CHILDREN (RFC 3348) and SPECIAL-USE (RFC 6154) attributes."""
    if patterns == [""] or list(patterns) == [""]:
        # RFC 3501 §6.3.8: empty pattern returns the delimiter and root
        return [Untagged(f'{command} (\\Noselect) "{DELIMITER}" ""')]
    names = {m.name for m in mailboxes}
    out: list[Untagged] = []
    for m in mailboxes:
        if subscribed_only and not m.subscribed:
            continue
        if not any(list_match(reference, p, m.name) for p in patterns):
            continue
        attrs = [a for a in sorted(m.attributes) if return_special_use or a in _BASE_ATTRS]
        if special_use_only and not any(a not in _BASE_ATTRS for a in m.attributes):
            continue
        if return_children and not any(a in ("\\HasChildren", "\\HasNoChildren") for a in attrs):
            prefix = m.name + DELIMITER
            has = any(n.startswith(prefix) for n in names)
            attrs.append("\\HasChildren" if has else "\\HasNoChildren")
        if subscribed_only and command == "LIST":
            attrs.append("\\Subscribed")  # RFC 5258 §3.1
        line = f'{command} ({" ".join(attrs)}) "{DELIMITER}" '.encode() + mailbox_name(m.name)
        out.append(Untagged(line))
    return out


_BASE_ATTRS = frozenset(
    {
        "\\Noselect",
        "\\NoInferiors",
        "\\Marked",
        "\\Unmarked",
        "\\HasChildren",
        "\\HasNoChildren",
        "\\NonExistent",
        "\\Subscribed",
    }
)
