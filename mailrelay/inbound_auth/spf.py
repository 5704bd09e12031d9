"""SPF (RFC 7208): an async `check_host()` over the `dns.Resolver` interface.

Results: none, neutral, pass, fail, softfail, temperror, permerror (§2.6). Mechanisms
all, include, a, mx, ip4, ip6, exists and the redirect modifier are evaluated; `ptr`
(§5.5: "SHOULD NOT be used") never matches but counts as a lookup; `exp` is ignored
(we do not send SPF explanations). Limits: 10 DNS-querying terms (§4.6.4), 2 void
lookups (§4.6.4), 10 MX names per `mx` (§4.6.4).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from mailrelay.inbound_auth.dns import NotFound, Resolver, TempError

__all__ = ["SpfResult", "check_host", "spf_identity"]

MAX_LOOKUPS = 10
MAX_VOID = 2
_QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_MACRO = re.compile(r"%\{([slodiphcrtv])(\d*)(r?)([.\-+,/_=]*)\}|%%|%_|%-", re.IGNORECASE)
_DUAL_CIDR = re.compile(r"^(.*?)(?:/(\d{1,2}))?(?://(\d{1,3}))?$")


class _PermError(Exception):
    pass


class _TempError(Exception):
    pass


@dataclass(frozen=True)
class SpfResult:
    result: str
    domain: str  # the domain checked (of MAIL FROM, or HELO for the null sender)
    identity: str  # "mailfrom" or "helo" (RFC 8601 ptype smtp)
    reason: str = ""


@dataclass
class _Ctx:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    sender: str
    helo: str
    resolver: Resolver
    lookups: int = 0
    void: int = 0
    seen: set[str] = field(default_factory=set)


def spf_identity(mail_from: str, helo: str) -> tuple[str, str, str]:
    """(sender, domain, identity): RFC 7208 §2.4: for the null reverse-path the sender
    is postmaster@<HELO name>."""
    if mail_from:
        local, _, domain = mail_from.rpartition("@")
        return (mail_from if local else f"postmaster@{domain}"), domain, "mailfrom"
    return f"postmaster@{helo}", helo, "helo"


def _valid_domain(domain: str) -> bool:
    labels = domain.rstrip(".").split(".")
    return len(labels) > 1 and len(domain) <= 253 and all(_LABEL.match(x) for x in labels)


async def check_host(ip: str, mail_from: str, helo: str, resolver: Resolver) -> SpfResult:
    """Evaluate SPF for the client `ip` and the MAIL FROM (or HELO) identity."""
    sender, domain, identity = spf_identity(mail_from, helo)
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return SpfResult("permerror", domain, identity, "bad client address")
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # RFC 7208 §5: IPv4-mapped addresses are IPv4
    # RFC 7208 §4.3: a domain that is not a valid FQDN gives "none".
    if not _valid_domain(domain):
        return SpfResult("none", domain, identity, "no valid domain")
    ctx = _Ctx(addr, sender, helo, resolver)
    try:
        result = await _check(ctx, domain.lower().rstrip("."))
    except _PermError as exc:
        return SpfResult("permerror", domain, identity, str(exc))
    except _TempError as exc:
        return SpfResult("temperror", domain, identity, str(exc))
    return SpfResult(result, domain, identity)


async def _dns(ctx: _Ctx, name: str, rtype: str, *, void_counts: bool = True) -> list[str]:
    try:
        answer = await ctx.resolver.lookup(name, rtype)
    except NotFound:
        answer = []
    except TempError as exc:
        raise _TempError(str(exc)) from None
    if not answer and void_counts:
        ctx.void += 1
        if ctx.void > MAX_VOID:  # RFC 7208 §4.6.4
            raise _PermError("too many void lookups")
    return answer


def _count(ctx: _Ctx) -> None:
    ctx.lookups += 1
    if ctx.lookups > MAX_LOOKUPS:  # RFC 7208 §4.6.4
        raise _PermError("too many DNS lookups")


async def _record(ctx: _Ctx, domain: str) -> str | None:
    try:
        txts = await ctx.resolver.lookup(domain, "TXT")
    except NotFound:
        return None
    except TempError as exc:
        raise _TempError(str(exc)) from None
    # RFC 7208 §4.5: exactly "v=spf1" followed by a space or the end.
    recs = [t for t in txts if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]
    if len(recs) > 1:
        raise _PermError("more than one SPF record")
    return recs[0] if recs else None


async def _check(ctx: _Ctx, domain: str) -> str:
    record = await _record(ctx, domain)
    if record is None:
        return "none"
    terms = record.split()[1:]
    redirect: str | None = None
    seen_mods: set[str] = set()
    for term in terms:
        m = re.match(r"^([A-Za-z][A-Za-z0-9\-_.]*)=(.*)$", term)
        if m:  # modifier (RFC 7208 §6)
            name = m.group(1).lower()
            if name in ("redirect", "exp"):
                if name in seen_mods:
                    raise _PermError(f"duplicate {name}")  # §6: at most once
                seen_mods.add(name)
                if name == "redirect":
                    redirect = m.group(2)
            continue
        qual = _QUALIFIERS.get(term[0])
        if qual is not None:
            term = term[1:]
        else:
            qual = "pass"
        if await _mechanism(ctx, domain, term):
            return qual
    if redirect is not None:  # §6.1: only when no mechanism matched (no "all")
        _count(ctx)
        target = _expand(ctx, redirect, domain)
        if not _valid_domain(target):
            raise _PermError("bad redirect domain")
        result = await _check(ctx, target)
        if result == "none":
            raise _PermError("redirect to a domain without SPF")
        return result
    return "neutral"  # §4.7: default result


async def _mechanism(ctx: _Ctx, domain: str, term: str) -> bool:
    m = re.match(r"^([A-Za-z][A-Za-z0-9]*)(.*)$", term)
    if m is None:
        raise _PermError(f"bad term {term!r}")
    name, rest = m.group(1).lower(), m.group(2)
    if rest and rest[0] not in ":/":
        raise _PermError(f"bad term {term!r}")
    arg = rest[1:] if rest.startswith(":") else rest  # "a/24" keeps its "/24"
    if name == "all":
        return True
    if name in ("ip4", "ip6"):
        try:
            net = ipaddress.ip_network(arg, strict=False)
        except ValueError:
            raise _PermError(f"bad {name} network") from None
        if (name == "ip4") != (net.version == 4):
            raise _PermError(f"bad {name} network")
        return ctx.ip.version == net.version and ctx.ip in net
    if name == "include":
        _count(ctx)
        target = _expand(ctx, arg, domain)
        if not arg or not _valid_domain(target):
            raise _PermError("bad include")
        result = await _check(ctx, target)
        # RFC 7208 §5.2: the include matches only on pass.
        if result == "temperror":
            raise _TempError("include temperror")
        if result in ("permerror", "none"):
            raise _PermError("include of a domain without a usable SPF record")
        return result == "pass"
    if name in ("a", "mx"):
        _count(ctx)
        m = _DUAL_CIDR.match(arg)
        assert m is not None
        spec, c4, c6 = m.group(1), m.group(2), m.group(3)
        target = _expand(ctx, spec, domain) if spec else domain
        v4 = int(c4) if c4 else 32
        v6 = int(c6) if c6 else 128
        if v4 > 32 or v6 > 128:
            raise _PermError("bad CIDR length")
        hosts = [target]
        if name == "mx":
            mxs = await _dns(ctx, target, "MX")
            if len(mxs) > 10:
                raise _PermError("too many MX records")  # §4.6.4
            hosts = [mx.split()[-1] for mx in mxs]
        rtype = "A" if ctx.ip.version == 4 else "AAAA"
        for host in hosts:
            for a in await _dns(ctx, host, rtype, void_counts=name == "a"):
                try:
                    net = ipaddress.ip_network(f"{a}/{v4 if ctx.ip.version == 4 else v6}",
                                               strict=False)
                except ValueError:
                    continue
                if ctx.ip in net:
                    return True
        return False
    if name == "exists":
        _count(ctx)
        target = _expand(ctx, arg, domain)
        return bool(await _dns(ctx, target, "A"))
    if name == "ptr":
        _count(ctx)
        return False  # RFC 7208 §5.5: SHOULD NOT be used; we do not match on it
    raise _PermError(f"unknown mechanism {name!r}")


def _expand(ctx: _Ctx, spec: str, domain: str) -> str:
    """Macro expansion (RFC 7208 §7)."""
    local, _, sdom = ctx.sender.rpartition("@")

    def ip_str() -> str:
        if ctx.ip.version == 4:
            return str(ctx.ip)
        return ".".join(ctx.ip.exploded.replace(":", ""))  # §7.3: dot-separated nibbles

    def one(m: re.Match[str]) -> str:
        tok = m.group(0)
        if tok == "%%":
            return "%"
        if tok == "%_":
            return " "
        if tok == "%-":
            return "%20"
        letter = m.group(1).lower()
        value = {"s": ctx.sender, "l": local or "postmaster", "o": sdom, "d": domain,
                 "i": ip_str(), "p": "unknown", "h": ctx.helo,
                 "v": "in-addr" if ctx.ip.version == 4 else "ip6",
                 "c": str(ctx.ip), "r": "unknown", "t": "0"}[letter]
        delims = m.group(4) or "."
        parts = re.split("[" + re.escape(delims) + "]", value)
        if m.group(3):
            parts.reverse()
        if m.group(2):
            n = int(m.group(2))
            if n == 0:
                raise _PermError("bad macro digit")
            parts = parts[-n:]
        return ".".join(parts)

    if "%" in spec and not re.fullmatch(r"([^%]|" + _MACRO.pattern + ")*", spec, re.IGNORECASE):
        raise _PermError("bad macro")
    out = _MACRO.sub(one, spec)
    if len(out) > 253:  # §7.3: drop labels from the left
        labels = out.split(".")
        while len(".".join(labels)) > 253:
            labels.pop(0)
        out = ".".join(labels)
    return out.rstrip(".")
