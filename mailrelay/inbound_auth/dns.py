"""One DNS interface for inbound authentication, with a small TTL cache.

`Resolver.lookup(name, rtype)` answers a list of strings: TXT (the record's strings
joined, RFC 7208 §3.3), A and AAAA (addresses), MX ("preference host"). A name that does
not exist raises `NotFound` (SPF counts it as a void lookup, RFC 7208 §4.6.4); a name
without records of that type answers []; anything transient raises `TempError`.
The default is aiodns (c-ares on the event loop, nothing blocks); tests inject a zone.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Protocol

from cxkernel.config import parse_hostport

__all__ = ["AiodnsResolver", "CachingResolver", "NotFound", "Resolver", "TempError"]

MAX_TTL = 3600
NEGATIVE_TTL = 60


class NotFound(Exception):
    """NXDOMAIN."""


class TempError(Exception):
    """SERVFAIL, timeout, refused: a retry may succeed."""


class Resolver(Protocol):
    async def lookup(self, name: str, rtype: str) -> list[str]: ...


class AiodnsResolver:
    """aiodns (>= 3.1) behind the `Resolver` interface; `servers` are "host:port"."""

    def __init__(self, servers: list[str] | None = None, timeout: float = 5.0) -> None:
        self.servers = [self._server(s) for s in servers or []]
        self.timeout = timeout
        self._resolver: Any = None

    @staticmethod
    def _server(value: str) -> str:
        host, port = parse_hostport(value)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def lookup(self, name: str, rtype: str) -> list[str]:
        return (await self.lookup_ttl(name, rtype))[0]

    async def lookup_ttl(self, name: str, rtype: str) -> tuple[list[str], int]:
        """The records and the smallest TTL among them."""
        import aiodns
        from aiodns import error as aerr

        if self._resolver is None:
            kw: dict[str, Any] = {"timeout": self.timeout, "tries": 2}
            if self.servers:
                kw["nameservers"] = self.servers
            self._resolver = aiodns.DNSResolver(**kw)
        name = name.rstrip(".")
        try:
            if hasattr(self._resolver, "query_dns"):  # aiodns >= 4
                result = await self._resolver.query_dns(name, rtype)
                out, ttl = [], MAX_TTL
                for rr in result.answer:
                    d = rr.data
                    ttl = min(ttl, rr.ttl)
                    if rtype == "TXT" and hasattr(d, "data"):
                        v = d.data
                        out.append(v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
                    elif rtype == "MX" and hasattr(d, "exchange"):
                        out.append(f"{d.priority} {d.exchange.rstrip('.')}")
                    elif rtype in ("A", "AAAA") and hasattr(d, "addr"):
                        out.append(d.addr)
                return out, ttl
            answers = await self._resolver.query(name, rtype)  # aiodns 3.x
            ttl = min([getattr(a, "ttl", 300) for a in answers] or [300])
            if rtype == "TXT":
                return [a.text.decode() if isinstance(a.text, bytes) else a.text
                        for a in answers], ttl
            if rtype == "MX":
                return [f"{a.priority} {a.host.rstrip('.')}" for a in answers], ttl
            return [a.host for a in answers], ttl
        except aerr.DNSError as exc:
            code = exc.args[0] if exc.args else None
            if code == aerr.ARES_ENOTFOUND:
                raise NotFound(name) from None
            if code == aerr.ARES_ENODATA:
                return [], NEGATIVE_TTL
            raise TempError(f"{name}/{rtype}: {exc.args[-1] if exc.args else exc}") from None


class CachingResolver:
    """Answers (and NXDOMAIN) kept for their TTL (at most an hour), at most `size` of
    them, least recently used dropped first. Temporary errors are never cached."""

    def __init__(self, inner: Resolver, size: int = 10000,
                 clock: Any = time.monotonic) -> None:
        self.inner = inner
        self.size = size
        self.clock = clock
        self._cache: OrderedDict[tuple[str, str], tuple[float, list[str] | None]] = OrderedDict()

    async def lookup(self, name: str, rtype: str) -> list[str]:
        key = (name.rstrip(".").lower(), rtype)
        now = self.clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(key)
            if hit[1] is None:
                raise NotFound(name)
            return list(hit[1])
        try:
            value: list[str] | None
            if isinstance(self.inner, AiodnsResolver):
                value, ttl = await self.inner.lookup_ttl(name, rtype)
            else:
                value, ttl = await self.inner.lookup(name, rtype), 300
        except NotFound:
            value, ttl = None, NEGATIVE_TTL
        if self.size:
            self._cache[key] = (now + min(max(ttl, 0), MAX_TTL), value)
            self._cache.move_to_end(key)
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        if value is None:
            raise NotFound(name)
        return list(value)
