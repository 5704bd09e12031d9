"""The MAIL and RCPT command lines, parsed without I/O (RFC 5321 §4.1.1.2-3, §4.1.2).

aiosmtpd parses paths with the e-mail *header* parser, refuses the null reverse-path
`<>` (so every bounce from outside was refused), upper-cases every ESMTP parameter value
(which destroys ENVID and ORCPT, RFC 3461 xtext is case-sensitive) and knows no DSN
parameter. This module replaces that parsing; the policy on what is accepted stays in
`smtp.policy` and the handler.

Also here: xtext (RFC 3461 §4) and the DSN parameter values (RFC 3461 §4.1-4.4).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["CommandSyntaxError", "Path", "parse_mail", "parse_rcpt", "xtext_decode",
           "xtext_encode", "parse_notify", "parse_orcpt", "DsnError"]


class CommandSyntaxError(ValueError):
    """The argument is not a path plus parameters (501 5.5.4 / 553 5.1.x)."""

    def __init__(self, code: int, enhanced: str, text: str) -> None:
        super().__init__(text)
        self.code, self.enhanced, self.text = code, enhanced, text

    def reply(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


class DsnError(ValueError):
    """A DSN parameter value is malformed (RFC 3461: 501 5.5.4)."""


@dataclass(frozen=True)
class Path:
    """A parsed reverse- or forward-path and its ESMTP parameters.

    `address` is the mailbox without angle brackets ("" for the null path `<>`);
    `route` is a source route ("@a,@b") if one was given (RFC 5321 §4.1.1.3: receivers
    SHOULD ignore it; the handler refuses it). Parameter keys are upper-case; values keep
    their case; a parameter without "=" has the value None.
    """

    address: str
    route: str = ""
    params: dict[str, str | None] = field(default_factory=dict)


# RFC 5321 §4.1.2: esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
_KEYWORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
# esmtp-value = 1*(%d33-60 / %d62-126); RFC 6531 §3.3 adds UTF-8 non-ASCII.
_UTF8 = "\u0080-\ud7ff\ue000-\U0010ffff"  # no surrogates: invalid UTF-8 from the wire
_VALUE = re.compile(rf"^[\x21-\x3c\x3e-\x7e{_UTF8}]+$")
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~" + _UTF8
_DOT_STRING = re.compile(rf"^[{_ATEXT}]+(\.[{_ATEXT}]+)*$")
_QUOTED = re.compile(rf'^"([\x20\x21\x23-\x5b\x5d-\x7e{_UTF8}]|\\[\x20-\x7e])*"$')
_ROUTE = re.compile(r"^@[^,:@\s<>]+(,@[^,:@\s<>]+)*:")
_LABEL = rf"[A-Za-z0-9_{_UTF8}](?:[A-Za-z0-9_\-{_UTF8}]*[A-Za-z0-9_{_UTF8}])?"
_DOMAIN = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_LITERAL = re.compile(r"^\[[\x21-\x5a\x5e-\x7e]+\]$")  # RFC 5321 §4.1.3
MAX_PATH = 256  # RFC 5321 §4.5.3.1.3


def _split_path(arg: str) -> tuple[str, str]:
    """`<...>` and the rest; tolerates one space after the colon (common in the wild)."""
    arg = arg.lstrip(" ")
    if not arg.startswith("<"):
        # RFC 5321 requires the angle brackets; a bare address is a syntax error.
        raise CommandSyntaxError(501, "5.5.4", "Syntax: path must be in angle brackets")
    end = arg.find(">")
    if end > 0 and '"' not in arg[:end]:  # the usual case: no quoted local part
        return arg[1:end], arg[end + 1:]
    # A quoted local part may contain ">": scan for the closing bracket outside quotes.
    i, quoted = 1, False
    while i < len(arg):
        ch = arg[i]
        if quoted and ch == "\\":
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            return arg[1:i], arg[i + 1:]
        i += 1
    raise CommandSyntaxError(501, "5.5.4", "Syntax: missing closing angle bracket")


def _mailbox_ok(mailbox: str) -> bool:
    local, at, domain = mailbox.rpartition("@")
    if not at or not local or not domain:
        return False
    if not (_DOT_STRING.match(local) or _QUOTED.match(local)):
        return False
    if domain.startswith("[") and domain.endswith("]"):
        return bool(_LITERAL.match(domain))  # address literal; policy decides
    return bool(_DOMAIN.match(domain))


def _params(rest: str) -> dict[str, str | None]:
    if rest and not rest.startswith(" "):
        raise CommandSyntaxError(501, "5.5.4", "Syntax: space expected after the path")
    out: dict[str, str | None] = {}
    for word in rest.split():
        key, eq, value = word.partition("=")
        if not _KEYWORD.match(key) or (eq and not _VALUE.match(value)):
            raise CommandSyntaxError(501, "5.5.4", "Syntax: bad ESMTP parameter")
        ukey = key.upper()
        if ukey in out:
            raise CommandSyntaxError(501, "5.5.4", f"Duplicate parameter {ukey}")
        out[ukey] = value if eq else None
    return out


def _parse(arg: str | None, keyword: str, *, allow_null: bool, allow_postmaster: bool) -> Path:
    if arg is None or arg[:len(keyword)].upper() != keyword:
        raise CommandSyntaxError(501, "5.5.4", f"Syntax: {keyword}<address> [parameters]")
    inner, rest = _split_path(arg[len(keyword):])
    params = _params(rest)
    if inner == "":
        if not allow_null:
            raise CommandSyntaxError(501, "5.1.3", "Null forward-path is not allowed")
        return Path("", "", params)  # RFC 5321 §4.1.1.2: the null reverse-path
    if len(inner) > MAX_PATH:
        raise CommandSyntaxError(501, "5.1.3", "Path too long")
    route = ""
    m = _ROUTE.match(inner)
    if m:
        route, inner = m.group(0)[:-1], inner[m.end():]
    if allow_postmaster and inner.lower() == "postmaster":
        # RFC 5321 §4.1.1.3: "RCPT TO:<Postmaster>" without a domain MUST be accepted.
        return Path("postmaster", route, params)
    if not _mailbox_ok(inner):
        raise CommandSyntaxError(553, "5.1.3" if allow_postmaster else "5.1.7",
                                 "Address syntax not accepted")
    return Path(inner, route, params)


def parse_mail(arg: str | None) -> Path:
    """Parse the argument of MAIL: `FROM:<reverse-path> [SP mail-parameters]`."""
    return _parse(arg, "FROM:", allow_null=True, allow_postmaster=False)


def parse_rcpt(arg: str | None) -> Path:
    """Parse the argument of RCPT: `TO:<forward-path> [SP rcpt-parameters]`."""
    return _parse(arg, "TO:", allow_null=False, allow_postmaster=True)


# ---- RFC 3461 -------------------------------------------------------------------------
_XCHAR = re.compile(r"^([\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*$")


def xtext_decode(value: str) -> str:
    """RFC 3461 §4: xtext = *( xchar / hexchar ), hexchar = "+" 2(HEXDIG upper-case)."""
    if not _XCHAR.match(value):
        raise DsnError("bad xtext")
    out = bytearray()
    i = 0
    while i < len(value):
        if value[i] == "+":
            out.append(int(value[i + 1:i + 3], 16))
            i += 3
        else:
            out += value[i].encode()
            i += 1
    return out.decode("utf-8", "replace")  # octets; UTF-8 as encoded by xtext_encode


def xtext_encode(value: str) -> str:
    """Encode for ENVID/ORCPT: "+", "=" and anything outside 33..126 as "+XX" (per octet)."""
    out = []
    for ch in value:
        if 33 <= ord(ch) <= 126 and ch not in "+=":
            out.append(ch)
        else:
            out.extend(f"+{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


_NOTIFY_WORDS = ("SUCCESS", "FAILURE", "DELAY")


def parse_notify(value: str) -> str:
    """RFC 3461 §4.1: "NEVER" alone, or a comma list of SUCCESS, FAILURE, DELAY."""
    words = [w.upper() for w in value.split(",")]
    if words == ["NEVER"]:
        return "NEVER"
    if not words or any(w not in _NOTIFY_WORDS for w in words) or len(set(words)) != len(words):
        raise DsnError("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
    return ",".join(w for w in _NOTIFY_WORDS if w in words)


def _scalar(m: re.Match[str]) -> str:
    n = int(m.group(1), 16)
    if n > 0x10FFFF or 0xD800 <= n <= 0xDFFF:
        raise DsnError("ORCPT escape is not a Unicode scalar value")
    return chr(n)


def parse_orcpt(value: str) -> tuple[str, str]:
    """RFC 3461 §4.2: ORCPT=addr-type ";" xtext; returns (type, decoded address)."""
    kind, semi, addr = value.partition(";")
    if not semi or not kind or not re.match(r"^[A-Za-z0-9-]+$", kind) or not addr:
        raise DsnError("ORCPT must be addr-type;xtext")
    decoded = xtext_decode(addr)
    if kind.lower() == "utf-8":  # RFC 6533 §3: utf-8-addr-xtext, "\x{HEX}" escapes
        decoded = re.sub(r"\\x\{([0-9A-Fa-f]{1,6})\}", _scalar, decoded)
    if not decoded.isprintable():
        raise DsnError("ORCPT must be printable")
    if len(decoded) > 500:
        raise DsnError("ORCPT too long")
    return kind.lower(), decoded
