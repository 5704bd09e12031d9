"""MX resolution for remote delivery (RFC 5321 §5.1, RFC 7505) with a tiny TTL cache.

`MXResolver.lookup(domain)` answers the hosts to try, best preference first. DNS answers
become values that carry their SMTP reply (ARCHITECTURE rule 6): a domain that does not
exist or publishes a null MX fails permanently; anything else that goes wrong in DNS
(SERVFAIL, timeout, refused) is temporary, because a retry may succeed.

The DNS client is injected (`query`), so tests pass a fake and never touch the network.
The default uses aiodns (c-ares driven by the event loop: nothing blocks).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cxkernel.errors import CxError

__all__ = ["DnsFailure", "MXRecord", "MXResolver", "MXQuery", "aiodns_query"]


class DnsFailure(CxError):
    """DNS could not give a usable destination; `temporary` says whether to retry."""


@dataclass(frozen=True)
class MXRecord:
    """One MX answer: preference, exchange host (no trailing dot) and its TTL in seconds."""

    preference: int
    exchange: str
    ttl: int = 300


class NoSuchDomain(Exception):
    """Raised by an `MXQuery` when the name does not exist (NXDOMAIN)."""


class NoRecords(Exception):
    """Raised by an `MXQuery` when the name exists but has no MX records (NODATA)."""


class DnsTemporary(Exception):
    """Raised by an `MXQuery` on SERVFAIL, timeout, refused or any other transient error."""


# An MX query function: domain -> MX records, or raises NoSuchDomain/NoRecords/DnsTemporary.
MXQuery = Callable[[str], Awaitable[list[MXRecord]]]


def aiodns_query(timeout: float = 5.0, tries: int = 2) -> MXQuery:
    """An `MXQuery` backed by aiodns; the resolver is made lazily inside the running loop."""
    resolver: Any = None

    async def query(domain: str) -> list[MXRecord]:
        nonlocal resolver
        import aiodns  # imported here: tests that inject a fake never need it
        from aiodns import error as aerr

        if resolver is None:
            resolver = aiodns.DNSResolver(timeout=timeout, tries=tries)
        try:
            if hasattr(resolver, "query_dns"):  # aiodns >= 4: pycares DNSResult
                result = await resolver.query_dns(domain, "MX")
                return [MXRecord(r.data.priority, r.data.exchange.rstrip("."), r.ttl)
                        for r in result.answer if hasattr(r.data, "exchange")]
            answers = await resolver.query(domain, "MX")  # aiodns 3.x
            return [MXRecord(a.priority, a.host.rstrip("."), getattr(a, "ttl", 300))
                    for a in answers]
        except aerr.DNSError as exc:
            code = exc.args[0] if exc.args else None
            if code == aerr.ARES_ENOTFOUND:
                raise NoSuchDomain(domain) from None
            if code == aerr.ARES_ENODATA:
                raise NoRecords(domain) from None
            raise DnsTemporary(f"{domain}: {exc.args[-1] if exc.args else exc}") from None

    return query


class MXResolver:
    """Resolve a mail domain to the hosts to try, with a small TTL cache.

    `lookup` returns ``[(preference, host), ...]`` sorted by preference; hosts of equal
    preference keep a random order (RFC 5321 §5.1: the client SHOULD randomise them;
    shuffling is left to the caller, which sees each attempt). Positive answers are cached
    for their TTL (clamped to [min_ttl, max_ttl]); permanent failures for `negative_ttl`;
    temporary failures are not cached.
    """

    def __init__(self, query: MXQuery | None = None, *, min_ttl: int = 30, max_ttl: int = 3600,
                 negative_ttl: int = 60, max_entries: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._query = query or aiodns_query()
        self._min_ttl, self._max_ttl, self._neg_ttl = min_ttl, max_ttl, negative_ttl
        self._max_entries = max_entries
        self._clock = clock
        self._cache: dict[str, tuple[float, list[tuple[int, str]] | DnsFailure]] = {}
        self._inflight: dict[str, asyncio.Future[list[tuple[int, str]]]] = {}

    async def lookup(self, domain: str) -> list[tuple[int, str]]:
        """MX hosts for `domain`, best first; raise `DnsFailure` carrying the reply."""
        key = domain.lower().rstrip(".")
        hit = self._cache.get(key)
        if hit is not None:
            expires, value = hit
            if expires > self._clock():
                if isinstance(value, DnsFailure):
                    raise value
                return list(value)
            del self._cache[key]
        task = self._inflight.get(key)
        if task is None:  # one query per domain in flight, however many callers wait
            task = asyncio.ensure_future(self._resolve(key))
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._done, key))
        # shield: a cancelled caller does not cancel the query the others wait for
        return list(await asyncio.shield(task))

    def _done(self, key: str, task: asyncio.Future[list[tuple[int, str]]]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so an unawaited failure is not logged

    async def _resolve(self, key: str) -> list[tuple[int, str]]:
        try:
            records = await self._query(key)
        except NoSuchDomain:
            # RFC 5321 §5.1 + RFC 3463 X.1.2: the destination domain does not exist.
            self._store(key, DnsFailure("bad destination domain", smtp_code=550,
                                        smtp_enhanced="5.1.2", temporary=False,
                                        reason=f"NXDOMAIN for {key}"), self._neg_ttl)
        except NoRecords:
            # RFC 5321 §5.1: no MX records -> the domain itself is the implicit MX (A/AAAA).
            hosts = [(0, key)]
            self._store(key, hosts, self._min_ttl)
            return hosts
        except DnsTemporary as exc:
            raise DnsFailure("DNS lookup failed, will retry", smtp_code=451,
                             smtp_enhanced="4.4.3", temporary=True, reason=str(exc)) from None
        except (TimeoutError, OSError) as exc:
            raise DnsFailure("DNS lookup failed, will retry", smtp_code=451,
                             smtp_enhanced="4.4.3", temporary=True, reason=repr(exc)) from None
        else:
            if not records:
                hosts = [(0, key)]  # RFC 5321 §5.1 implicit MX
                self._store(key, hosts, self._min_ttl)
                return hosts
            # RFC 7505 §3: a null MX ("0 .") says the domain accepts no mail; the client
            # MUST NOT attempt delivery (§4.1) and answers 5.1.10.
            if any(r.exchange in ("", ".") for r in records):
                self._store(key, DnsFailure("domain does not accept mail (null MX)",
                                            smtp_code=556, smtp_enhanced="5.1.10",
                                            temporary=False, reason=f"null MX for {key}"),
                            self._neg_ttl)
            else:
                hosts = sorted({(r.preference, r.exchange.lower().rstrip(".")) for r in records},
                               key=lambda h: h[0])
                ttl = min(r.ttl for r in records)
                self._store(key, hosts, ttl)
                return hosts
        cached = self._cache[key][1]
        assert isinstance(cached, DnsFailure)
        raise cached

    def _store(self, key: str, value: list[tuple[int, str]] | DnsFailure, ttl: int) -> None:
        ttl = max(self._min_ttl, min(self._max_ttl, ttl)) if not isinstance(value, DnsFailure) \
            else ttl
        if len(self._cache) >= self._max_entries:
            now = self._clock()
            for k in [k for k, (exp, _) in self._cache.items() if exp <= now]:
                del self._cache[k]
            while len(self._cache) >= self._max_entries:  # still full: drop the oldest
                del self._cache[next(iter(self._cache))]
        self._cache[key] = (self._clock() + ttl, value)
