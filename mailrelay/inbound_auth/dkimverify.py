"""DKIM (RFC 6376) and ARC (RFC 8617) verification with dkimpy, DNS fetched first.

dkimpy wants a synchronous DNS function; our DNS is async. So the keys named by each
DKIM-Signature, ARC-Message-Signature and ARC-Seal (s= and d=) are fetched through the
`dns.Resolver` first, then dkimpy verifies in an executor (hashing is CPU work) with a
DNS function that only reads what was fetched. A key that could not be fetched for a
transient reason gives `temperror` for that signature (RFC 6376 §6.1.2), never a pass.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import dkim

from mailrelay.inbound_auth.dns import NotFound, Resolver, TempError

__all__ = ["ArcResult", "DkimResult", "verify_all"]

MAX_SIGNATURES = 5  # verify at most this many DKIM-Signature fields (RFC 6376 §6.1)
_FIELD = re.compile(rb"^(dkim-signature|arc-message-signature|arc-seal)[ \t]*:",
                    re.IGNORECASE)
_TAG = re.compile(rb"(?:^|;)\s*([a-z]+)\s*=\s*([^;]*)")


@dataclass(frozen=True)
class DkimResult:
    result: str  # pass | fail | neutral | temperror | permerror | policy
    domain: str  # d=
    selector: str  # s=
    b: str  # the first 8 characters of b= (RFC 8601 §2.7.1 header.b)


@dataclass(frozen=True)
class ArcResult:
    result: str  # pass | fail | none
    chain: str  # RFC 8617 §4.1 the cv of the most recent instance, for the comment


def _fields(raw: bytes) -> list[tuple[bytes, bytes]]:
    """(lower-case name, unfolded value) of the signature fields in the header section."""
    end = raw.find(b"\r\n\r\n")
    head = raw[:end + 2] if end >= 0 else raw
    out: list[tuple[bytes, list[bytes]]] = []
    current: list[bytes] | None = None
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
            continue
        m = _FIELD.match(line)
        current = [line[m.end():]] if m else None
        if m and current is not None:
            out.append((m.group(1).lower(), current))
    return [(name, b" ".join(p.strip() for p in parts)) for name, parts in out]


def _tags(value: bytes) -> dict[str, str]:
    tags: dict[str, str] = {}
    for m in _TAG.finditer(value):
        tags.setdefault(m.group(1).decode().lower(),
                        re.sub(rb"\s+", b"", m.group(2)).decode("ascii", "replace"))
    return tags


async def _fetch_keys(names: set[str], resolver: Resolver) -> tuple[dict[str, bytes | None], set[str]]:
    keys: dict[str, bytes | None] = {}
    temp: set[str] = set()

    async def one(name: str) -> None:
        try:
            txts = await resolver.lookup(name, "TXT")
            keys[name] = "".join(txts[:1]).encode() if txts else None
        except NotFound:
            keys[name] = None
        except TempError:
            temp.add(name)

    await asyncio.gather(*(one(n) for n in names))
    return keys, temp


def _verify_sync(raw: bytes, sigs: list[tuple[str, str, str]], keys: dict[str, bytes | None],
                 temp: set[str], arc: bool) -> tuple[list[DkimResult], ArcResult]:
    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        return keys.get(name.decode("ascii", "replace").rstrip(".").lower())

    results: list[DkimResult] = []
    d = dkim.DKIM(raw)
    for idx, (dom, sel, b) in enumerate(sigs):
        keyname = f"{sel}._domainkey.{dom}".lower()
        if keyname in temp:
            results.append(DkimResult("temperror", dom, sel, b))
            continue
        try:
            ok = d.verify(idx=idx, dnsfunc=dnsfunc)
            res = "pass" if ok else "fail"
        except dkim.KeyFormatError:
            res = "permerror"  # RFC 6376 §6.1.2: no usable key
        except dkim.DKIMException:
            res = "permerror"  # malformed signature (RFC 8601 §2.7.1)
        results.append(DkimResult(res, dom, sel, b))
    arc_res = ArcResult("none", "none")
    if arc:
        cv, _data, _reason = dkim.arc_verify(raw, dnsfunc=dnsfunc)
        value = cv.decode() if isinstance(cv, bytes) else "fail"
        arc_res = ArcResult(value if value in ("pass", "fail", "none") else "fail", value)
    return results, arc_res


async def verify_all(raw: bytes, resolver: Resolver) -> tuple[list[DkimResult], ArcResult]:
    """Verify every DKIM signature (up to MAX_SIGNATURES) and the ARC chain of `raw`."""
    fields = _fields(raw)
    sigs: list[tuple[str, str, str]] = []
    names: set[str] = set()
    for name, value in fields:
        tags = _tags(value)
        dom, sel = tags.get("d", "").lower(), tags.get("s", "").lower()
        if name == b"dkim-signature":
            if len(sigs) < MAX_SIGNATURES:
                sigs.append((dom, sel, tags.get("b", "")[:8]))
        if dom and sel and re.fullmatch(r"[a-z0-9._-]+", dom + sel):
            names.add(f"{sel}._domainkey.{dom}")
    arc = any(n != b"dkim-signature" for n, _ in fields)
    if not sigs and not arc:
        return [], ArcResult("none", "none")
    keys, temp = await _fetch_keys(names, resolver)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, _verify_sync, raw, sigs, keys, temp, arc)
