"""SORT and THREAD (RFC 5256): base subjects, sort keys, the two threading algorithms.

Pure: the session hands in :class:`SortInfo` records built from each message's header
block (:func:`sort_info`), gets ordered messages or a thread tree back, and formats the
reply with :func:`format_threads`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from mailrelay.mime.decode import decode_words
from mailrelay.mime.headers import parse_addresses, split_fields, unfold

__all__ = [
    "SORT_KEYS",
    "SortInfo",
    "sort_info",
    "base_subject",
    "sort_messages",
    "Node",
    "thread_orderedsubject",
    "thread_references",
    "format_threads",
    "esort_response",
]

#: RFC 5256 §3 sort-key names (REVERSE is a modifier)
SORT_KEYS = frozenset({"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO"})
_FIELDS = {"date", "subject", "from", "to", "cc", "message-id", "references", "in-reply-to"}
_MSGID = re.compile(r"<([^<>\s]+)>")


@dataclass(slots=True)
class SortInfo:
    """What sorting and threading need of one message."""

    uid: int
    seq: int
    arrival: datetime
    size: int
    sent: datetime  # Date header, or the arrival time when absent/invalid (RFC 5256 §2.2)
    subject: str  # base subject (RFC 5256 §2.1)
    is_reply: bool  # the subject had a reply/forward leader or trailer
    from_: str = ""
    to: str = ""
    cc: str = ""
    message_id: str | None = None
    references: list[str] = field(default_factory=list)


def _utc(d: datetime) -> datetime:
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


def _first_mailbox(value: str | None) -> str:
    """RFC 5256 §3: the addr-mailbox of the first address, compared case-insensitively."""
    if not value:
        return ""
    addrs: list[Any] = parse_addresses(value) or []
    for a in addrs:
        # the ENVELOPE view: a group's start is an address whose addr-mailbox is the
        # group name (RFC 3501 §7.4.2), and it is the first address (as Dovecot sorts)
        if a[2] is not None:
            return str(a[2]).casefold()
    return ""


def sort_info(
    uid: int, seq: int, arrival: datetime, size: int, header: bytes
) -> SortInfo:
    """Build a :class:`SortInfo` from a message's header block."""
    found: dict[str, str] = {}
    for name, fs, fe in split_fields(header, 0, len(header)):
        if name in _FIELDS and name not in found:
            found[name] = unfold(header, fs, fe)
    arrival = _utc(arrival)
    sent = arrival
    if "date" in found:
        try:
            sent = _utc(parsedate_to_datetime(found["date"]))
        except (TypeError, ValueError, IndexError):
            pass
    raw_subject = decode_words(found.get("subject", ""))
    subject, is_reply = _base_subject(raw_subject)
    msgid = _MSGID.search(found.get("message-id", ""))
    refs = _MSGID.findall(found.get("references", ""))
    if not refs:  # RFC 5256 §3 REFERENCES step 1: else the first In-Reply-To id
        irt = _MSGID.search(found.get("in-reply-to", ""))
        refs = [irt.group(1)] if irt else []
    return SortInfo(
        uid,
        seq,
        arrival,
        size,
        sent,
        subject,
        is_reply,
        _first_mailbox(found.get("from")),
        _first_mailbox(found.get("to")),
        _first_mailbox(found.get("cc")),
        msgid.group(1) if msgid else None,
        refs,
    )


# RFC 5256 §5 ABNF
_BLOB = r"\[[^\[\]]*\]\s*"
_LEADER = re.compile(rf"^(?:{_BLOB})*(?:re|fwd?)\s*(?:{_BLOB})?:\s*", re.IGNORECASE)
_BLOB_LEAD = re.compile(rf"^{_BLOB}")
_TRAILER = re.compile(r"(?:\s+|\(fwd\))$", re.IGNORECASE)
_WS = re.compile(r"\s+")


def _base_subject(subject: str) -> tuple[str, bool]:
    """RFC 5256 §2.1 base subject, and whether it looked like a reply or forward."""
    # (1) decoded already; tabs and continuations become one space
    s = _WS.sub(" ", subject).strip(" ")
    reply = False
    while True:
        # (2) remove subj-trailer ("(fwd)" / WSP) repeatedly
        while True:
            t = _TRAILER.sub("", s)
            if t == s:
                break
            reply = reply or t != s.rstrip()
            s = t
        # (3)-(5) remove subj-leader and subj-blob while something remains
        while True:
            m = _LEADER.match(s)
            if m:
                s = s[m.end() :]
                reply = True
                continue
            b = _BLOB_LEAD.match(s)
            if b and s[b.end() :]:
                s = s[b.end() :]
                continue
            break
        # (6) "[fwd:" subj "]"
        if s[:5].casefold() == "[fwd:" and s.endswith("]"):
            s = s[5:-1].strip(" ")
            reply = True
            continue
        break
    return s.casefold(), reply  # i;unicode-casemap comparison


def base_subject(subject: str) -> str:
    """RFC 5256 §2.1 base subject of a raw Subject value (case-folded for comparison)."""
    return _base_subject(decode_words(subject))[0]


# RFC 5256 §2.1 / RFC 4790 §9.2 i;ascii-casemap compares letters as upper case, so
# "_" and "[" sort after every letter (as Dovecot does), not between "Z" and "a"
_KEY: dict[str, Callable[[SortInfo], Any]] = {
    "ARRIVAL": lambda i: i.arrival,
    "CC": lambda i: i.cc.upper(),
    "DATE": lambda i: i.sent,
    "FROM": lambda i: i.from_.upper(),
    "SIZE": lambda i: i.size,
    "SUBJECT": lambda i: i.subject.upper(),
    "TO": lambda i: i.to.upper(),
}


def sort_messages(infos: Sequence[SortInfo], criteria: Sequence[tuple[str, bool]]) -> list[SortInfo]:
    """Order by ``(key, reverse)`` criteria; full ties keep mailbox order (RFC 5256 §3)."""
    out = sorted(infos, key=lambda i: i.seq)
    for key, reverse in reversed(criteria):  # stable sorts, least significant first
        out.sort(key=_KEY[key], reverse=reverse)
    return out


@dataclass(slots=True, eq=False)
class Node:
    """A thread node; ``msg`` is None for a dummy (a referenced but absent message)."""

    msg: SortInfo | None = None
    children: list[Node] = field(default_factory=list)
    parent: Node | None = None

    def sent(self) -> tuple[datetime, int]:
        """The node's sort date: its message's, or a dummy's first child's."""
        if self.msg is not None:
            return self.msg.sent, self.msg.seq
        return self.children[0].sent() if self.children else (datetime.min.replace(tzinfo=UTC), 0)


def _sort_tree(nodes: list[Node]) -> None:
    for n in nodes:
        _sort_tree(n.children)
    nodes.sort(key=Node.sent)


def thread_orderedsubject(infos: Sequence[SortInfo]) -> list[Node]:
    """RFC 5256 §3 ORDEREDSUBJECT: group by base subject, sent date within a group;
    the first message is the parent of all others; threads ordered by their first."""
    groups: dict[str, list[SortInfo]] = {}
    for i in sorted(infos, key=lambda i: (i.subject, i.sent, i.seq)):
        groups.setdefault(i.subject, []).append(i)
    roots = []
    for msgs in groups.values():
        root = Node(msgs[0])
        root.children = [Node(m, parent=root) for m in msgs[1:]]
        roots.append(root)
    roots.sort(key=Node.sent)
    return roots


def _ancestor(a: Node, b: Node) -> bool:
    """Whether ``a`` is ``b`` or one of its ancestors."""
    n: Node | None = b
    while n is not None:
        if n is a:
            return True
        n = n.parent
    return False


def _link(parent: Node, child: Node) -> None:
    if child.parent is not None:
        child.parent.children.remove(child)
    child.parent = parent
    parent.children.append(child)


def thread_references(infos: Sequence[SortInfo]) -> list[Node]:
    """RFC 5256 §3 REFERENCES (after Zawinski's algorithm), steps 1-7."""
    table: dict[str, Node] = {}
    nodes: list[Node] = []
    for info in sorted(infos, key=lambda i: i.seq):
        # (1A) the message's own container; a duplicate or missing id gets a unique one
        node: Node | None = table.get(info.message_id) if info.message_id else None
        if node is None or node.msg is not None:
            node = Node(info)
            if info.message_id and info.message_id not in table:
                table[info.message_id] = node
        else:
            node.msg = info
        nodes.append(node)
        # (1B) link the references in order, parent before child, never into a loop
        prev: Node | None = None
        for ref in info.references:
            cur = table.get(ref)
            if cur is None:
                cur = table[ref] = Node()
            if prev is not None and cur.parent is None and not _ancestor(cur, prev):
                _link(prev, cur)
            prev = cur
        # (1C) RFC 5256 §4 step 1.B: the last reference (or NIL) becomes the parent; a
        # parent from an earlier message's references is broken *before* the new link,
        # and the new link is not made if it would introduce a loop (then: no parent)
        if node.parent is not None and node.parent is not prev:
            node.parent.children.remove(node)
            node.parent = None
        if prev is not None and node.parent is None and not _ancestor(node, prev):
            _link(prev, node)
    # (2) the root set: every container without a parent
    seen: set[int] = set()
    roots: list[Node] = []
    for n in [*table.values(), *nodes]:
        while n.parent is not None:
            n = n.parent
        if id(n) not in seen:
            seen.add(id(n))
            roots.append(n)
    # (4) prune dummies; (5) group the root set by base subject
    roots = _merge_subjects(_prune(roots, root=True))
    # (6)(7) siblings and roots by sent date
    _sort_tree(roots)
    return roots


def _prune(nodes: list[Node], root: bool) -> list[Node]:
    out: list[Node] = []
    for n in nodes:
        n.children = _prune(n.children, root=False)
        for ch in n.children:
            ch.parent = n
        if n.msg is None:
            if not n.children:
                continue  # dummy without children: delete
            if not root or len(n.children) == 1:
                for ch in n.children:  # promote (at the root only a single child)
                    ch.parent = None if root else n.parent
                out += n.children
                continue
        out.append(n)
    return out


def _subject_of(n: Node) -> tuple[str, bool]:
    if n.msg is not None:
        return n.msg.subject, n.msg.is_reply
    first = min(n.children, key=Node.sent)
    return (first.msg.subject, first.msg.is_reply) if first.msg else ("", False)


def _merge_subjects(roots: list[Node]) -> list[Node]:
    """RFC 5256 §3 REFERENCES step 5: roots with the same base subject become one thread."""
    table: dict[str, Node] = {}
    for r in roots:  # (5B) which container represents each subject
        subj, reply = _subject_of(r)
        if not subj:
            continue
        old = table.get(subj)
        if old is None or (old.msg is not None and r.msg is None):
            table[subj] = r
        elif old.msg is not None and r.msg is not None and old.msg.is_reply and not reply:
            table[subj] = r
    out: list[Node] = []
    for r in roots:  # (5C) merge
        if r.parent is not None:
            continue  # already placed under another root
        subj, reply = _subject_of(r)
        t = table.get(subj) if subj else None
        if t is None or t is r:
            out.append(r)
        elif t.msg is None and r.msg is None:  # both dummies: one set of children
            for ch in list(r.children):
                _link(t, ch)
        elif t.msg is None:  # the table's is a dummy: this one joins it
            _link(t, r)
        elif r.msg is None:  # this one is a dummy: the table's joins it
            if t in out:
                out.remove(t)
            _link(r, t)
            table[subj] = r
            out.append(r)
        elif reply and not t.msg.is_reply:  # a reply joins the original
            _link(t, r)
        elif t.msg.is_reply and not reply:
            if t in out:
                out.remove(t)
            _link(r, t)
            table[subj] = r
            out.append(r)
        else:  # neither is a reply to the other: siblings under a new dummy
            d = Node()
            if t in out:
                out[out.index(t)] = d
            else:
                out.append(d)
            _link(d, t)
            _link(d, r)
            table[subj] = d
    return out


def format_threads(roots: Sequence[Node], number: Callable[[SortInfo], int]) -> str:
    """RFC 5256 §4 thread-list text: ``(3 6 (4 23)(44 7 96))``."""
    return "".join("(" + _fmt(r, number) + ")" for r in roots)


def _fmt(node: Node, number: Callable[[SortInfo], int]) -> str:
    parts: list[str] = []
    n = node
    while True:
        if n.msg is not None:
            parts.append(str(number(n.msg)))
        if len(n.children) == 1:
            n = n.children[0]
            continue
        if n.children:
            nested = "".join("(" + _fmt(ch, number) + ")" for ch in n.children)
            return " ".join(parts) + (" " if parts else "") + nested
        return " ".join(parts)


def esort_response(tag: str, numbers: Sequence[int], *, uid: bool, returns: Sequence[str]) -> str:
    """RFC 5267 §3.2 ESORT reply (without ``* ``): MIN and MAX are the first and last in
    sort order, ALL lists every result in sort order (ranges only for ascending runs)."""
    opts = set(returns) or {"ALL"}  # RETURN () means ALL, as for ESEARCH (RFC 4731)
    out = f'ESEARCH (TAG "{tag}")' + (" UID" if uid else "")
    if numbers:
        if "MIN" in opts:
            out += f" MIN {numbers[0]}"
        if "MAX" in opts:
            out += f" MAX {numbers[-1]}"
    if "COUNT" in opts:
        out += f" COUNT {len(numbers)}"
    if numbers and "ALL" in opts:
        parts: list[str] = []
        lo = hi = numbers[0]
        for n in numbers[1:]:
            if n == hi + 1:
                hi = n
                continue
            parts.append(str(lo) if lo == hi else f"{lo}:{hi}")
            lo = hi = n
        parts.append(str(lo) if lo == hi else f"{lo}:{hi}")
        out += " ALL " + ",".join(parts)
    return out
