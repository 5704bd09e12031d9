"""Sieve scripts (RFC 5228) compiled into a small typed tree we evaluate ourselves.

Parsing is sievelib's (a maintained parser with the grammar and the extension checks);
this module turns its command objects into frozen nodes with plain Python values (strings
unquoted and unescaped per RFC 5228 §2.4.2, numbers with their K/M/G quantifiers applied,
tags as names) and refuses extensions we do not implement, so that a script that compiles
is a script :mod:`mailrelay.sieve.interp` can run. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sievelib.parser import Parser

#: What `require` may name here (and what ManageSieve's SIEVE capability lists).
EXTENSIONS = ("fileinto", "reject", "envelope", "body", "imap4flags", "copy", "vacation")
MAX_SCRIPT_BYTES = 64 * 1024  # ManageSieve MAXSCRIPTSIZE-like bound; Dovecot's default is 1 MB
MAX_NESTING = 16


class SieveError(Exception):
    """The script does not compile; the text says where and why."""


@dataclass(frozen=True)
class Test:
    name: str  # header, address, envelope, exists, size, body, allof, anyof, not, true, false
    tags: dict[str, Any] = field(default_factory=dict)  # match, comparator, part, over/under
    args: tuple[Any, ...] = ()  # header names, keys, size limit
    tests: tuple[Test, ...] = ()


@dataclass(frozen=True)
class Command:
    name: str  # keep, discard, stop, fileinto, redirect, reject, vacation, *flag, if/elsif/else
    tags: dict[str, Any] = field(default_factory=dict)
    args: tuple[Any, ...] = ()
    test: Test | None = None
    block: tuple[Command, ...] = ()


@dataclass(frozen=True)
class Script:
    requires: frozenset[str]
    commands: tuple[Command, ...]


def unquote(value: str) -> str:
    """A Sieve string token as its value: quoted (§2.4.2) or multi-line ``text:`` (§2.4.2)."""
    if value.startswith("text:"):
        body = value.split("\n", 1)[1] if "\n" in value else ""
        if body.endswith("\n."):
            body = body[:-2]
        elif body == ".":
            body = ""
        lines = [ln[1:] if ln.startswith("..") else ln for ln in body.split("\n")]
        return "\r\n".join(ln.rstrip("\r") for ln in lines) + ("\r\n" if body else "")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        out, it = [], iter(value[1:-1])
        for ch in it:
            out.append(next(it, "") if ch == "\\" else ch)  # §2.4.2: "\" escapes any char
        return "".join(out)
    return value


def _number(value: str) -> int:
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(value[-1:].upper(), 1)
    digits = value[:-1] if mult > 1 else value
    return int(digits) * mult


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(unquote(v) for v in value)
    return (unquote(value),)


_TAGGED = {"match-type", "address-part", "comparator", "body-transform"}


def _tags(cmd: Any) -> dict[str, Any]:
    tags: dict[str, Any] = {}
    extra = dict(getattr(cmd, "extra_arguments", {}) or {})
    for key, value in cmd.arguments.items():
        if key in _TAGGED:
            if key == "comparator":
                tags["comparator"] = unquote(extra.get("comparator", '"i;ascii-casemap"'))
            else:
                tags[key] = str(value).lstrip(":").lower()
        elif isinstance(value, str) and value.startswith(":"):
            tag = value.lstrip(":").lower()
            if tag in extra:
                raw = extra[tag]
                tags[tag] = (_strings(raw) if isinstance(raw, list) or str(raw).startswith('"')
                             else _number(str(raw)))
            else:
                tags[tag] = True
    return tags


def _test(t: Any, depth: int) -> Test:
    if depth > MAX_NESTING:
        raise SieveError("tests nested too deeply")
    name = t.name
    a = t.arguments
    if name in ("allof", "anyof"):
        return Test(name, tests=tuple(_test(x, depth + 1) for x in a["tests"]))
    if name == "not":
        return Test(name, tests=(_test(a["test"], depth + 1),))
    if name in ("true", "false"):
        return Test(name)
    tags = _tags(t)
    if name == "size":
        return Test(name, {"over": a.get("comparator") == ":over"}, (_number(a["limit"]),))
    if name == "exists":
        return Test(name, tags, (_strings(a["header-names"]),))
    if name == "body":
        return Test(name, tags, ((), _strings(a["key-list"])))
    if name in ("header", "address", "envelope"):
        names = a.get("header-names", a.get("header-list"))
        return Test(name, tags, (_strings(names), _strings(a["key-list"])))
    raise SieveError(f"test {name!r} is not supported")


def _command(c: Any, depth: int) -> Command:
    if depth > MAX_NESTING:
        raise SieveError("blocks nested too deeply")
    name, a = c.name, c.arguments
    block = tuple(_command(x, depth + 1) for x in getattr(c, "children", []))
    if name in ("if", "elsif"):
        return Command(name, test=_test(a["test"], depth + 1), block=block)
    if name == "else":
        return Command(name, block=block)
    tags = _tags(c)
    if name == "fileinto":
        return Command(name, tags, (unquote(a["mailbox"]),))
    if name == "redirect":
        return Command(name, tags, (unquote(a["address"]),))
    if name == "reject":
        return Command(name, tags, (unquote(a["text"]),))
    if name in ("addflag", "setflag", "removeflag"):
        return Command(name, tags, _strings(a["list-of-flags"]))
    if name == "vacation":
        return Command(name, tags, (unquote(a["reason"]),))
    if name in ("keep", "discard", "stop", "require"):
        return Command(name, tags)
    raise SieveError(f"command {name!r} is not supported")


def compile_script(source: str | bytes) -> Script:
    """Parse and check a script; raise SieveError with the parser's message."""
    raw = source.encode() if isinstance(source, str) else source
    if len(raw) > MAX_SCRIPT_BYTES:
        raise SieveError(f"script larger than {MAX_SCRIPT_BYTES} bytes")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # RFC 5228 §2.2: scripts are UTF-8
        raise SieveError("script is not UTF-8") from exc
    parser = Parser()
    try:
        ok = parser.parse(raw)
    except Exception as exc:  # noqa: BLE001 - sievelib raises assorted errors on bad input
        raise SieveError(f"parse error: {exc}") from exc
    if not ok:
        raise SieveError(str(getattr(parser, "error", "") or "parse error"))
    requires: set[str] = set()
    commands: list[Command] = []
    for c in parser.result:
        if c.name == "require":
            for ext in _strings(c.arguments["capabilities"]):
                if ext not in EXTENSIONS:  # i;octet and i;ascii-casemap need no require
                    raise SieveError(f"extension {ext!r} is not supported")
                requires.add(ext)
            continue
        commands.append(_command(c, 0))
    return Script(frozenset(requires), tuple(commands))
