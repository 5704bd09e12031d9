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
    flags, perm = view.flag_lines()  # the mailbox's keywords too (RFC 3501 §7.2.6)
    out: list[Untagged | UntaggedStatus] = [
        flags,
        Untagged(f"{view.exists} EXISTS"),
        Untagged(f"{view.recent_count()} RECENT"),
    ]
    ordered = sorted(result.messages, key=lambda m: m.uid)
    unseen = next((i + 1 for i, m in enumerate(ordered) if "\\Seen" not in m.flags), None)
    if unseen is not None:
        out.append(UntaggedStatus("OK", "First unseen", f"UNSEEN {unseen}"))
    out += [
        perm,
        UntaggedStatus("OK", "UIDs valid", f"UIDVALIDITY {result.uidvalidity}"),
        UntaggedStatus("OK", "Predicted next UID", f"UIDNEXT {result.uidnext}"),
    ]
    if view.condstore:
        out.append(UntaggedStatus("OK", "Highest", f"HIGHESTMODSEQ {view.highestmodseq}"))
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


def _ancestors(name: str) -> list[str]:
    parts = name.split(DELIMITER)
    return [DELIMITER.join(parts[:i]) for i in range(1, len(parts))]


def _order(names: Iterable[str]) -> list[str]:
    return sorted(set(names), key=lambda n: (n != "INBOX", n))


#: one LIST/LSUB reply: name, attributes, extended data (RFC 5258 §4) or ""
ListEntry = tuple[str, list[str], str]


def list_responses(
    mailboxes: Sequence[MailboxInfo],
    reference: str,
    patterns: Sequence[str],
    *,
    command: str = "LIST",
    **options: object,
) -> list[Untagged]:
    """LIST/LSUB reply lines; ``options`` as for :func:`list_entries`."""
    if list(patterns) == [""]:
        # RFC 3501 §6.3.8: empty pattern returns the delimiter and root
        return [Untagged(f'{command} (\\Noselect) "{DELIMITER}" ""')]
    return [
        list_line(command, e)
        for e in list_entries(mailboxes, reference, patterns, command=command, **options)  # type: ignore[arg-type]
    ]


def list_line(command: str, entry: ListEntry) -> Untagged:
    name, attrs, extra = entry
    head = f'{command} ({" ".join(attrs)}) "{DELIMITER}" '.encode()
    return Untagged(head + mailbox_name(name) + extra.encode())


def list_entries(
    mailboxes: Sequence[MailboxInfo],
    reference: str,
    patterns: Sequence[str],
    *,
    command: str = "LIST",
    subscribed_only: bool = False,
    special_use_only: bool = False,
    return_special_use: bool = True,
    return_children: bool = True,
    subscriptions: Sequence[str] | None = None,
    return_subscribed: bool = False,
    recursive_match: bool = False,
) -> list[ListEntry]:
    """LIST/LSUB entries with CHILDREN (RFC 3348) and SPECIAL-USE (RFC 6154) attributes.

    ``subscriptions`` are the subscribed names (they need not exist); without them the
    mailboxes' own ``subscribed`` marks are used. ``subscribed_only`` is LIST
    (SUBSCRIBED) or LSUB, ``return_subscribed`` RETURN (SUBSCRIBED), ``recursive_match``
    the RECURSIVEMATCH selection option (RFC 5258 §3).
    """
    boxes = {m.name: m for m in mailboxes}
    if subscriptions is None:
        subscriptions = [m.name for m in mailboxes if m.subscribed]
    subs = set(subscriptions)

    def matches(name: str) -> bool:
        return any(list_match(reference, p, name) for p in patterns)

    def attrs_of(name: str) -> list[str] | None:
        m = boxes.get(name)
        if m is None:
            return None
        attrs = [a for a in sorted(m.attributes) if return_special_use or a in _BASE_ATTRS]
        if return_children and not any(a in ("\\HasChildren", "\\HasNoChildren") for a in attrs):
            prefix = m.name + DELIMITER
            has = any(n.startswith(prefix) for n in boxes)
            attrs.append("\\HasChildren" if has else "\\HasNoChildren")
        return attrs

    def line(name: str, attrs: list[str], extra: str = "") -> ListEntry:
        return (name, attrs, extra)

    out: list[ListEntry] = []
    if command == "LSUB":
        # RFC 3501 §6.3.9: subscribed names; with "%" a parent of a subscribed name the
        # pattern does not reach is listed as \Noselect
        parents = {p for n in subs for p in _ancestors(n) if not matches(n)}
        for name in _order(subs | parents):
            if not matches(name):
                continue
            if name in subs:
                out.append(line(name, [] if name in boxes else ["\\Noselect"]))
            else:
                out.append(line(name, ["\\Noselect"]))
        return out
    if not subscribed_only:
        for name in _order(boxes):
            if not matches(name):
                continue
            if special_use_only and not any(a not in _BASE_ATTRS for a in boxes[name].attributes):
                continue
            attrs = attrs_of(name) or []
            if return_subscribed and name in subs:
                attrs.append("\\Subscribed")  # RFC 5258 §3.2 RETURN (SUBSCRIBED)
            out.append(line(name, attrs))
        return out
    # RFC 5258 §3.1 (SUBSCRIBED): subscribed names, existing or not
    # RFC 5258 §3.1/§4: CHILDINFO tells of matching descendants the reply does not list
    # itself (a descendant the patterns match is returned on its own instead)
    with_kids = (
        {p for n in subs if not matches(n) for p in _ancestors(n)} if recursive_match else set()
    )
    for name in _order(subs | with_kids):
        if not matches(name):
            continue
        own = attrs_of(name)
        if special_use_only and (
            own is None or not any(a not in _BASE_ATTRS for a in boxes[name].attributes)
        ):
            continue
        attrs = own if own is not None else ["\\NonExistent"]
        if name in subs:
            attrs.append("\\Subscribed")
        # RFC 5258 §4: CHILDINFO for a name whose descendants match the selection
        extra = ' ("CHILDINFO" ("SUBSCRIBED"))' if name in with_kids else ""
        out.append(line(name, attrs, extra))
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
