"""Turn one complete client command (lines + literals) into a typed command.

Raises only :class:`ParseError` (documented; property-tested).
"""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from collections.abc import Callable

from . import commands as c
from .errors import ParseError
from .items import parse_fetch_attrs, parse_search_program, seqset
from .lexer import ASTRING_CHARS, Cursor
from .seqset import SequenceSet
from .spool import Spool

__all__ = ["parse_command", "parse_tag"]

_TAG_CHARS = ASTRING_CHARS - {"+"}
_STATUS_ITEMS = {
    "MESSAGES",
    "RECENT",
    "UIDNEXT",
    "UIDVALIDITY",
    "UNSEEN",
    "HIGHESTMODSEQ",
    "SIZE",
    "DELETED",
    "APPENDLIMIT",
}


def parse_tag(line: bytes) -> str | None:
    """The tag of a (possibly malformed) command line, or None (for untagged BAD)."""
    text = line.decode("latin-1")
    end = 0
    while end < len(text) and text[end] in _TAG_CHARS:
        end += 1
    if end == 0 or (end < len(text) and text[end] != " "):
        return None
    return text[:end]


def _noargs(cls: type[c.Command]) -> Callable[[Cursor, str], c.Command]:
    def parse(cur: Cursor, tag: str) -> c.Command:
        return cls(tag)

    return parse


def _login(cur: Cursor, tag: str) -> c.Command:
    cur.sp()
    user = cur.astring()
    cur.sp()
    return c.Login(tag, user, cur.astring())


def _authenticate(cur: Cursor, tag: str) -> c.Command:
    cur.sp()
    mech = cur.atom().upper()
    initial: bytes | None = None
    if cur.maybe_sp():  # RFC 4959 SASL-IR
        text = cur.take(
            frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
        )
        initial = decode_base64(text, cur)
    return c.Authenticate(tag, mech, initial)


def decode_base64(text: str, cur: Cursor | None = None) -> bytes:
    """SASL response: ``=`` is an empty response (RFC 4959 §3)."""
    if text == "=":
        return b""
    try:
        return b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ParseError("Invalid base64", cur.tag if cur else None) from exc


def _select(cur: Cursor, tag: str, readonly: bool) -> c.Command:
    cur.sp()
    mailbox = cur.mailbox()
    condstore = False
    qresync: c.QResyncParams | None = None
    if cur.maybe_sp():  # RFC 4466 select-params
        cur.expect("(")
        first = True
        while cur.peek() != ")":
            if not first:
                cur.sp()
            first = False
            word = cur.atom().upper()
            if word == "CONDSTORE":  # RFC 7162 §3.1.8
                condstore = True
            elif word == "QRESYNC":  # RFC 7162 §3.2.5
                cur.sp()
                cur.expect("(")
                uidvalidity = cur.nz_number()
                cur.sp()
                modseq = cur.number()
                known = None
                match = None
                if cur.maybe_sp():
                    if cur.peek() != "(":
                        known = seqset(cur)
                        cur.maybe_sp()
                    if cur.peek() == "(":
                        cur.pos += 1
                        seqs = seqset(cur)
                        cur.sp()
                        match = (seqs, seqset(cur))
                        cur.expect(")")
                cur.expect(")")
                qresync = c.QResyncParams(uidvalidity, modseq, known, match)
            else:
                raise cur.error(f"Unknown SELECT parameter {word[:30]!r}")
        cur.pos += 1
    return c.Select(tag, mailbox, readonly, condstore, qresync)


def _create(cur: Cursor, tag: str) -> c.Command:
    cur.sp()
    mailbox = cur.mailbox()
    use: tuple[str, ...] = ()
    if cur.maybe_sp():  # RFC 6154 §3: CREATE mbox (USE (\Sent))
        cur.expect("(")
        if cur.atom().upper() != "USE":
            raise cur.error("Unknown CREATE parameter")
        cur.sp()
        use = cur.flag_list()
        cur.expect(")")
    return c.Create(tag, mailbox, use)


def _mailbox_cmd(cls: type) -> Callable[[Cursor, str], c.Command]:
    def parse(cur: Cursor, tag: str) -> c.Command:
        cur.sp()
        return cls(tag, cur.mailbox())  # type: ignore[no-any-return]

    return parse


def _rename(cur: Cursor, tag: str) -> c.Command:
    cur.sp()
    old = cur.mailbox()
    cur.sp()
    return c.Rename(tag, old, cur.mailbox())


def _list(cur: Cursor, tag: str) -> c.Command:
    cur.sp()
    selection: tuple[str, ...] = ()
    if cur.peek() == "(":  # RFC 5258 list-select-opts
        selection = cur.atom_list()
        cur.sp()
    ref = cur.list_mailbox()
    cur.sp()
    patterns: list[str] = []
    if cur.peek() == "(":
        cur.pos += 1
        while cur.peek() != ")":
            if patterns:
                cur.sp()
            patterns.append(cur.list_mailbox())
        cur.pos += 1
    else:
        patterns.append(cur.list_mailbox())
    returns: list[str] = []
    status_items: tuple[str, ...] = ()
    if cur.maybe_sp():
        if cur.atom().upper() != "RETURN":
            raise cur.error("Expected RETURN")
        cur.sp()
        cur.expect("(")
        while cur.peek() != ")":
            if returns:
                cur.sp()
            opt = cur.atom().upper()
            returns.append(opt)
            if opt == "STATUS":  # RFC 5819
                cur.sp()
                status_items = cur.atom_list()
        cur.pos += 1
    return c.List(tag, ref, tuple(patterns), selection, tuple(returns), status_items)


def _lsub(cur: Cursor, tag: str) -> c.Command:
    cur.sp()
    ref = cur.list_mailbox()
    cur.sp()
    return c.Lsub(tag, ref, cur.list_mailbox())


def _status(cur: Cursor, tag: str) -> c.Command:
    cur.sp()
    mailbox = cur.mailbox()
    cur.sp()
    items = cur.atom_list()
    bad = [i for i in items if i not in _STATUS_ITEMS]
    if bad or not items:
        raise cur.error("Invalid STATUS item")
    return c.Status(tag, mailbox, items)


def _append_message(cur: Cursor) -> c.AppendMessage:
    """RFC 3502 append-message: [flag-list SP] [date-time SP] literal."""
    flags: tuple[str, ...] = ()
    date = None
    if cur.peek() == "(":
        flags = cur.flag_list()
        cur.sp()
    if cur.peek() == '"':
        date = cur.date_time()
        cur.sp()
    if cur.line[cur.pos : cur.pos + 6].upper() == "UTF8 (":  # RFC 6855 §4 append-data
        cur.pos += 6
        if cur.peek() != "~":
            raise cur.error("UTF8 APPEND data must be a literal8")
        data = cur.message_literal()
        cur.expect(")")
        return c.AppendMessage(flags, date, data, True)
    data = cur.message_literal()
    return c.AppendMessage(flags, date, data, cur.binary_literal)


def _append(cur: Cursor, tag: str) -> c.Command:
    cur.sp()
    mailbox = cur.mailbox()
    cur.sp()
    first = _append_message(cur)
    extra: list[c.AppendMessage] = []
    while cur.maybe_sp():  # RFC 3502 MULTIAPPEND: more messages, one transaction
        extra.append(_append_message(cur))
    return c.Append(
        tag, mailbox, first.flags, first.date, first.message, first.binary, tuple(extra)
    )


def _expunge(cur: Cursor, tag: str) -> c.Command:
    return c.Expunge(tag)


def _search(cur: Cursor, tag: str, uid: bool = False) -> c.Command:
    cur.sp()
    returns: tuple[str, ...] | None = None
    charset = None
    if cur.line[cur.pos : cur.pos + 7].upper() == "RETURN ":  # RFC 4731 §3
        cur.pos += 7
        returns = cur.atom_list()
        cur.sp()
    if cur.line[cur.pos : cur.pos + 8].upper() == "CHARSET ":
        cur.pos += 8
        charset = cur.astring().upper()
        cur.sp()
    return c.Search(tag, parse_search_program(cur), charset, uid, returns)


#: RFC 5256 sort keys and threading algorithms we implement
SORT_KEYS = frozenset({"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO"})
THREAD_ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")


def _sort(cur: Cursor, tag: str, uid: bool = False) -> c.Command:
    """RFC 5256 §4: SORT SP sort-criteria SP search-criteria (charset required);
    RFC 5267 §3.2 ESORT: ``SORT RETURN (MIN MAX COUNT ALL) ...``."""
    cur.sp()
    returns: tuple[str, ...] | None = None
    if cur.line[cur.pos : cur.pos + 7].upper() == "RETURN ":
        cur.pos += 7
        returns = cur.atom_list()
        if any(r not in ("MIN", "MAX", "COUNT", "ALL") for r in returns):
            raise cur.error("Unknown SORT return option")
        cur.sp()
    words = cur.atom_list()
    criteria: list[tuple[str, bool]] = []
    reverse = False
    for w in words:
        if w == "REVERSE" and not reverse:
            reverse = True
            continue
        if w not in SORT_KEYS:
            raise cur.error(f"Unknown sort key {w[:30]!r}")
        criteria.append((w, reverse))
        reverse = False
    if reverse or not criteria:
        raise cur.error("Invalid sort criteria")
    cur.sp()
    charset = cur.astring().upper()
    cur.sp()
    return c.Sort(tag, tuple(criteria), charset, parse_search_program(cur), uid, returns)


def _thread(cur: Cursor, tag: str, uid: bool = False) -> c.Command:
    """RFC 5256 §4: THREAD SP thread-alg SP search-criteria (charset required)."""
    cur.sp()
    alg = cur.atom().upper()
    if alg not in THREAD_ALGORITHMS:
        raise cur.error(f"Unknown threading algorithm {alg[:30]!r}")
    cur.sp()
    charset = cur.astring().upper()
    cur.sp()
    return c.Thread(tag, alg, charset, parse_search_program(cur), uid)


def _fetch(cur: Cursor, tag: str, uid: bool = False) -> c.Command:
    cur.sp()
    seqs = seqset(cur)
    cur.sp()
    attrs = parse_fetch_attrs(cur)
    changedsince = None
    vanished = False
    if cur.maybe_sp():  # RFC 7162 §3.1.4, §3.2.6 fetch-modifiers
        cur.expect("(")
        first = True
        while cur.peek() != ")":
            if not first:
                cur.sp()
            first = False
            word = cur.atom().upper()
            if word == "CHANGEDSINCE":
                cur.sp()
                changedsince = cur.number()
            elif word == "VANISHED" and uid:
                vanished = True
            else:
                raise cur.error(f"Unknown FETCH modifier {word[:30]!r}")
        cur.pos += 1
    # RFC 7162 §3.2.6: VANISHED requires CHANGEDSINCE
    if vanished and changedsince is None:
        raise cur.error("VANISHED without CHANGEDSINCE")
    if uid and not any(a.name == "UID" for a in attrs):
        attrs = (*attrs, c.FetchAttr("UID"))  # RFC 3501 §6.4.8: UID is always returned
    if changedsince is not None and not any(a.name == "MODSEQ" for a in attrs):
        attrs = (*attrs, c.FetchAttr("MODSEQ"))  # RFC 7162 §3.1.4.1
    return c.Fetch(tag, seqs, attrs, uid, changedsince, vanished)


def _store(cur: Cursor, tag: str, uid: bool = False) -> c.Command:
    cur.sp()
    seqs = seqset(cur)
    cur.sp()
    unchanged = None
    if cur.peek() == "(":  # RFC 7162 §3.1.3
        cur.pos += 1
        if cur.atom().upper() != "UNCHANGEDSINCE":
            raise cur.error("Unknown STORE modifier")
        cur.sp()
        unchanged = cur.number()
        cur.expect(")")
        cur.sp()
    item = cur.atom().upper()
    mode = item[0] if item[:1] in ("+", "-") else ""
    base = item.lstrip("+-")
    if base not in ("FLAGS", "FLAGS.SILENT"):
        raise cur.error("Invalid STORE item")
    cur.sp()
    if cur.peek() == "(":
        flags = cur.flag_list()
    else:
        fl = [cur.flag()]
        while cur.maybe_sp():
            fl.append(cur.flag())
        flags = tuple(fl)
    return c.Store(tag, seqs, mode, flags, base.endswith(".SILENT"), uid, unchanged)


def _copy_move(cls: type) -> Callable[..., c.Command]:
    def parse(cur: Cursor, tag: str, uid: bool = False) -> c.Command:
        cur.sp()
        seqs = seqset(cur)
        cur.sp()
        return cls(tag, seqs, cur.mailbox(), uid)  # type: ignore[no-any-return]

    return parse


def _uid(cur: Cursor, tag: str) -> c.Command:
    cur.sp()
    sub = cur.atom().upper()
    if sub == "EXPUNGE":  # RFC 4315 §2.1
        cur.sp()
        return c.Expunge(tag, seqset(cur))
    fn = _UID_COMMANDS.get(sub)
    if fn is None:
        raise cur.error(f"Unknown UID command {sub[:30]!r}")
    return fn(cur, tag, uid=True)


def _enable(cur: Cursor, tag: str) -> c.Command:
    caps = []
    while cur.maybe_sp():
        caps.append(cur.atom().upper())
    if not caps:
        raise cur.error("ENABLE needs capabilities")
    return c.Enable(tag, tuple(caps))


def _id(cur: Cursor, tag: str) -> c.Command:
    cur.sp()
    if cur.peek() != "(":  # RFC 2971: "ID NIL"
        if cur.nstring() is not None:
            raise cur.error("Expected parameter list or NIL")
        return c.Id(tag, None)
    cur.pos += 1
    params: list[tuple[str, str | None]] = []
    while cur.peek() != ")":
        if params:
            cur.sp()
        raw_key = cur.string()
        cur.sp()
        val = cur.nstring()
        # RFC 2971 §3.3: fields at most 30 octets, values at most 1024, at most 30 pairs
        if len(raw_key) > 30:
            raise cur.error("ID field longer than 30 octets")
        if val is not None and len(val) > 1024:
            raise cur.error("ID value longer than 1024 octets")
        key = raw_key.decode("utf-8", "replace")
        params.append((key, None if val is None else val.decode("utf-8", "replace")))
        if len(params) > 30:
            raise cur.error("Too many ID parameters")
    cur.pos += 1
    return c.Id(tag, tuple(params))


def _getquota(cur: Cursor, tag: str) -> c.Command:
    cur.sp()
    return c.GetQuota(tag, cur.astring())


def _compress(cur: Cursor, tag: str) -> c.Command:
    cur.sp()
    return c.Compress(tag, cur.atom().upper())


_UID_COMMANDS: dict[str, Callable[..., c.Command]] = {
    "FETCH": _fetch,
    "SEARCH": _search,
    "STORE": _store,
    "COPY": _copy_move(c.Copy),
    "MOVE": _copy_move(c.Move),
    "SORT": _sort,
    "THREAD": _thread,
}

_COMMANDS: dict[str, Callable[[Cursor, str], c.Command]] = {
    "CAPABILITY": _noargs(c.Capability),
    "NOOP": _noargs(c.Noop),
    "LOGOUT": _noargs(c.Logout),
    "STARTTLS": _noargs(c.StartTLS),
    "LOGIN": _login,
    "AUTHENTICATE": _authenticate,
    "SELECT": lambda cur, tag: _select(cur, tag, False),
    "EXAMINE": lambda cur, tag: _select(cur, tag, True),
    "CREATE": _create,
    "DELETE": _mailbox_cmd(c.Delete),
    "RENAME": _rename,
    "SUBSCRIBE": _mailbox_cmd(c.Subscribe),
    "UNSUBSCRIBE": _mailbox_cmd(c.Unsubscribe),
    "LIST": _list,
    "LSUB": _lsub,
    "STATUS": _status,
    "APPEND": _append,
    "CHECK": _noargs(c.Check),
    "CLOSE": _noargs(c.Close),
    "UNSELECT": _noargs(c.Unselect),
    "EXPUNGE": _expunge,
    "SEARCH": _search,
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy_move(c.Copy),
    "MOVE": _copy_move(c.Move),
    "UID": _uid,
    "IDLE": _noargs(c.Idle),
    "ENABLE": _enable,
    "ID": _id,
    "NAMESPACE": _noargs(c.Namespace),
    "GETQUOTA": _getquota,
    "GETQUOTAROOT": _mailbox_cmd(c.GetQuotaRoot),
    "COMPRESS": _compress,
    "SORT": _sort,
    "THREAD": _thread,
}

#: Names of every command the parser knows (for the state table).
COMMAND_NAMES = frozenset(_COMMANDS)


#: ``tag [UID] FETCH set rest``: a FETCH line split where its parts vary independently
_FETCH_LINE = re.compile(rb"([^ ]+) (UID )?FETCH ([0-9:*,]+) (.+)", re.IGNORECASE | re.DOTALL)
#: (uid, rest of the line) -> (items, CHANGEDSINCE, VANISHED) of a FETCH already parsed
#: in full; what follows the set does not depend on the tag or the set
_FETCH_SHAPES: dict[tuple[bool, bytes], tuple[tuple[c.FetchAttr, ...], int | None, bool]] = {}
_MAX_SHAPES = 256


def _fetch_again(head: bytes) -> c.Fetch | None:
    """A FETCH whose items were seen before (clients pipeline the same FETCH with
    different sets: mbsync one message per command): only the tag and the set are
    parsed. None when this line must go through the full parser."""
    m = _FETCH_LINE.fullmatch(head)
    if m is None:
        return None
    shape = _FETCH_SHAPES.get((m[2] is not None, m[4]))
    if shape is None:
        return None
    tag = parse_tag(head)
    if tag is None or len(tag) != len(m[1]):
        return None
    try:
        seqs = SequenceSet.parse(m[3].decode("ascii"))
    except Exception:
        return None  # the full parser says what is wrong
    attrs, changedsince, vanished = shape
    return c.Fetch(tag, seqs, attrs, m[2] is not None, changedsince, vanished)


def _remember_fetch(head: bytes, cmd: c.Fetch) -> None:
    m = _FETCH_LINE.fullmatch(head)
    if m is None or cmd.seqset.saved:
        return
    if len(_FETCH_SHAPES) >= _MAX_SHAPES:
        _FETCH_SHAPES.clear()
    _FETCH_SHAPES[(m[2] is not None, m[4])] = (cmd.attrs, cmd.changedsince, cmd.vanished)


def parse_command(chunks: list[bytes | Spool], *, utf8: bool = False) -> c.Command:
    """Parse ``[line, literal, line, ...]`` (lines without CRLF) into a command;
    ``utf8``: the client enabled UTF8=ACCEPT (RFC 6855), mailbox names are UTF-8."""
    head = chunks[0]
    single = len(chunks) == 1 and isinstance(head, bytes)
    if single:
        assert isinstance(head, bytes)
        again = _fetch_again(head)
        if again is not None:
            return again
    cmd = _parse(chunks, utf8)
    if single and isinstance(cmd, c.Fetch):
        assert isinstance(head, bytes)
        _remember_fetch(head, cmd)
    return cmd


def _parse(chunks: list[bytes | Spool], utf8: bool) -> c.Command:
    cur = Cursor(chunks)
    cur.utf8 = utf8
    head = chunks[0]
    tag = parse_tag(head) if isinstance(head, bytes) else None
    if tag is None:
        raise ParseError("Missing or invalid tag")
    cur.tag = tag
    cur.pos = len(tag)
    cur.sp()
    name = cur.atom().upper()
    fn = _COMMANDS.get(name)
    if fn is None:
        raise ParseError(f"Unknown command {name[:30]}", tag)
    try:
        cmd = fn(cur, tag)
        cur.end()
    except ParseError as exc:
        exc.tag = tag
        raise
    except (IndexError, ValueError, OverflowError) as exc:  # defensive: never crash
        raise ParseError("Syntax error", tag) from exc
    return cmd
