"""Run a compiled Sieve script against one message for one recipient: a list of actions.

Pure (no I/O, no clock): the delivery stage carries the actions out. Implements RFC 5228
(tests header/address/envelope/exists/size/allof/anyof/not/true/false, the :is/:contains/
:matches match types, the i;octet and i;ascii-casemap comparators, keep/discard/stop/
fileinto/redirect and the implicit keep of §2.10.2), RFC 5173 body, RFC 5232 imap4flags,
RFC 3894 copy, RFC 5429 reject and RFC 5230 vacation (the decision whether to answer is
:mod:`mailrelay.sieve.vacation`'s, with the sender history in the database).
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from .script import Command, Script, Test

MAX_ACTIONS = 32
MAX_REDIRECTS = 4  # per message and script, as Dovecot's sieve_max_redirects


@dataclass(frozen=True)
class Keep:
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileInto:
    mailbox: str
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Redirect:
    address: str


@dataclass(frozen=True)
class Reject:
    reason: str


@dataclass(frozen=True)
class Vacation:
    reason: str
    days: int = 7
    subject: str | None = None
    from_: str | None = None
    addresses: tuple[str, ...] = ()
    handle: str = ""
    mime: bool = False


Action = Keep | FileInto | Redirect | Reject | Vacation


class RuntimeLimit(Exception):
    """The script asked for more actions than allowed; delivery falls back to keep."""


@dataclass
class Message:
    """What tests look at: the parsed header and body, the envelope, the size."""

    raw: bytes
    sender: str  # envelope MAIL FROM ("" for the null sender)
    recipient: str  # envelope RCPT TO (the original recipient)
    _msg: EmailMessage | None = field(default=None, repr=False)

    @property
    def msg(self) -> EmailMessage:
        if self._msg is None:
            self._msg = email.message_from_bytes(self.raw, policy=email.policy.default)  # type: ignore[assignment]
        assert self._msg is not None
        return self._msg

    def headers(self, name: str) -> list[str]:
        # RFC 5228 §2.7.2: header values compared after RFC 2047 decoding
        out = []
        for v in self.msg.get_all(name, []) or []:
            try:
                out.append(str(v))
            except Exception:  # noqa: BLE001 - undecodable header: compare its raw text
                out.append(getattr(v, "_parse_tree", v).__str__())
        return out

    def body_text(self, transform: str) -> list[str]:
        if transform == "raw":  # RFC 5173 §5.1: the body undecoded
            end = self.raw.find(b"\r\n\r\n")
            return [self.raw[end + 4:].decode("utf-8", "replace") if end >= 0 else ""]
        texts = []
        for part in self.msg.walk():
            if part.get_content_maintype() == "text" and not part.is_multipart():
                try:
                    texts.append(str(part.get_content()))
                except (LookupError, ValueError):
                    payload = part.get_payload(decode=True)
                    texts.append(payload.decode("utf-8", "replace")
                                 if isinstance(payload, bytes) else "")
        return texts


def _glob(pattern: str) -> str:
    """:matches (RFC 5228 §2.7.1): * any sequence, ? one character, \\ escapes."""
    out, it = [], iter(pattern)
    for ch in it:
        if ch == "\\":
            out.append(re.escape(next(it, "")))
        elif ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return "".join(out)


def _match(values: list[str], keys: tuple[str, ...], tags: dict[str, Any]) -> bool:
    mt = tags.get("match-type", "is")
    fold = tags.get("comparator", "i;ascii-casemap") != "i;octet"
    for v in values:
        vv = v.lower() if fold else v
        for k in keys:
            kk = k.lower() if fold else k
            if mt == "is" and vv == kk:
                return True
            if mt == "contains" and kk in vv:
                return True
            if mt == "matches" and re.fullmatch(_glob(kk), vv, re.DOTALL):
                return True
    return False


def _address_part(addr: str, part: str) -> str:
    local, _, domain = addr.rpartition("@") if "@" in addr else (addr, "", "")
    if part == "localpart":
        return local
    if part == "domain":
        return domain
    return addr


class _Run:
    def __init__(self, script: Script, m: Message) -> None:
        self.script, self.m = script, m
        self.actions: list[Action] = []
        self.implicit_keep = True
        self.flags: list[str] = []
        self.redirects = 0
        self.stopped = False

    def test(self, t: Test) -> bool:
        n = t.name
        if n == "true":
            return True
        if n == "false":
            return False
        if n == "not":
            return not self.test(t.tests[0])
        if n == "allof":
            return all(self.test(x) for x in t.tests)
        if n == "anyof":
            return any(self.test(x) for x in t.tests)
        if n == "size":
            size = len(self.m.raw)
            return size > t.args[0] if t.tags.get("over") else size < t.args[0]
        if n == "exists":
            return all(self.m.headers(h) for h in t.args[0])
        if n == "header":
            return _match([v for h in t.args[0] for v in self.m.headers(h)], t.args[1], t.tags)
        if n == "address":
            part = t.tags.get("address-part", "all")
            vals = [_address_part(a, part) for h in t.args[0]
                    for _, a in email.utils.getaddresses(self.m.headers(h)) if a]
            return _match(vals, t.args[1], t.tags)
        if n == "envelope":
            part = t.tags.get("address-part", "all")
            env = {"from": self.m.sender, "to": self.m.recipient}
            vals = [_address_part(env[h.lower()], part) for h in t.args[0] if h.lower() in env]
            return _match(vals, t.args[1], t.tags)
        if n == "body":
            return _match(self.m.body_text(t.tags.get("body-transform", "text")), t.args[1],
                          t.tags)
        return False

    def add(self, a: Action) -> None:
        if a not in self.actions:  # RFC 5228 §2.10.3: duplicates are done once
            if len(self.actions) >= MAX_ACTIONS:
                raise RuntimeLimit("too many actions")
            self.actions.append(a)

    def block(self, cmds: tuple[Command, ...]) -> None:
        taken = False  # whether an if/elsif of this chain already ran
        for c in cmds:
            if self.stopped:
                return
            n = c.name
            if n == "if":
                taken = self.test(c.test) if c.test else False
                if taken:
                    self.block(c.block)
                continue
            if n == "elsif":
                if not taken and c.test and self.test(c.test):
                    taken = True
                    self.block(c.block)
                continue
            if n == "else":
                if not taken:
                    self.block(c.block)
                taken = True
                continue
            self.action(c)

    def _flags(self, c: Command) -> tuple[str, ...]:
        given = c.tags.get("flags")
        return tuple(given) if given else tuple(self.flags)

    def action(self, c: Command) -> None:
        n = c.name
        if n == "stop":
            self.stopped = True
        elif n == "keep":
            self.add(Keep(self._flags(c)))
            self.implicit_keep = False
        elif n == "discard":
            self.implicit_keep = False
        elif n == "fileinto":
            self.add(FileInto(c.args[0], self._flags(c)))
            if not c.tags.get("copy"):
                self.implicit_keep = False
        elif n == "redirect":
            self.redirects += 1
            if self.redirects > MAX_REDIRECTS:
                raise RuntimeLimit("too many redirects")
            self.add(Redirect(c.args[0]))
            if not c.tags.get("copy"):
                self.implicit_keep = False
        elif n == "reject":
            self.add(Reject(c.args[0]))
            self.implicit_keep = False
        elif n == "vacation":
            t = c.tags
            subject = t.get("subject")
            frm = t.get("from")
            self.add(Vacation(c.args[0], int(t.get("days", 7)) if t.get("days") else 7,
                              subject[0] if isinstance(subject, tuple) else None,
                              frm[0] if isinstance(frm, tuple) else None,
                              tuple(t.get("addresses", ()) or ()),
                              (t["handle"][0] if isinstance(t.get("handle"), tuple) else ""),
                              bool(t.get("mime"))))
        elif n in ("setflag", "addflag", "removeflag"):  # RFC 5232 §3
            flags = [f for x in c.args for f in x.split()]
            if n == "setflag":
                self.flags = list(dict.fromkeys(flags))
            elif n == "addflag":
                self.flags = list(dict.fromkeys(self.flags + flags))
            else:
                drop = {f.lower() for f in flags}
                self.flags = [f for f in self.flags if f.lower() not in drop]


def run(script: Script, m: Message) -> list[Action]:
    """The actions for this message; an implicit keep is added as RFC 5228 §2.10.2 says.
    A script past its limits keeps the message (never loses it)."""
    r = _Run(script, m)
    try:
        r.block(script.commands)
    except RuntimeLimit:
        return [Keep()]
    if r.implicit_keep:
        r.add(Keep(tuple(r.flags)))
    return r.actions
