"""DMARC (RFC 7489): the policy record, the organizational domain, identifier alignment
and the disposition. Pure apart from `fetch_record`, which uses the `dns.Resolver`.

The organizational domain (§3.2) needs the Public Suffix List; we carry the part of it
that matters here (generic TLDs are one label; the two-label public suffixes of China and
of the usual country domains are listed below). A domain under an unlisted multi-label
suffix is then treated as its own organization for relaxed alignment, which can only
make alignment stricter, never looser.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mailrelay.inbound_auth.dns import NotFound, Resolver, TempError

__all__ = ["DmarcRecord", "DmarcResult", "aligned", "evaluate", "fetch_record",
           "org_domain", "parse_record"]

# Two-label public suffixes (a subset of the Public Suffix List).
_SUFFIXES = frozenset(
    f"{sld}.{tld}"
    for tld, slds in {
        "cn": ("com", "net", "org", "gov", "edu", "ac", "mil", "ah", "bj", "cq", "fj", "gd",
               "gs", "gx", "gz", "ha", "hb", "he", "hi", "hk", "hl", "hn", "jl", "js", "jx",
               "ln", "mo", "nm", "nx", "qh", "sc", "sd", "sh", "sn", "sx", "tj", "tw", "xj",
               "xz", "yn", "zj"),
        "hk": ("com", "net", "org", "gov", "edu", "idv"),
        "tw": ("com", "net", "org", "gov", "edu", "idv"),
        "uk": ("co", "org", "ac", "gov", "ltd", "plc", "me", "net", "nhs", "police"),
        "jp": ("co", "ne", "or", "ac", "go", "ad", "ed", "gr", "lg"),
        "au": ("com", "net", "org", "edu", "gov", "asn", "id"),
        "nz": ("co", "net", "org", "govt", "ac", "school"),
        "kr": ("co", "ne", "or", "re", "go", "ac"),
        "in": ("co", "net", "org", "gov", "ac", "edu", "res"),
        "br": ("com", "net", "org", "gov", "edu"),
        "sg": ("com", "net", "org", "gov", "edu"),
        "my": ("com", "net", "org", "gov", "edu"),
        "za": ("co", "org", "gov", "ac", "net"),
    }.items()
    for sld in slds
)


def org_domain(domain: str) -> str:
    """RFC 7489 §3.2: the public suffix plus one label."""
    labels = domain.lower().rstrip(".").split(".")
    n = 3 if len(labels) >= 3 and ".".join(labels[-2:]) in _SUFFIXES else 2
    return ".".join(labels[-n:])


def aligned(a: str, b: str, mode: str) -> bool:
    """RFC 7489 §3.1: strict ("s") needs equal domains, relaxed equal org domains."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    return a == b if mode == "s" else org_domain(a) == org_domain(b)


@dataclass(frozen=True)
class DmarcRecord:
    p: str  # none | quarantine | reject
    sp: str | None
    adkim: str  # r | s
    aspf: str
    pct: int


@dataclass(frozen=True)
class DmarcResult:
    result: str  # pass | fail | none | temperror | permerror
    policy: str  # none | quarantine | reject: what the record asks for
    disposition: str  # none | quarantine | reject: what we do (after pct)
    from_domain: str


def parse_record(text: str) -> DmarcRecord | None:
    """RFC 7489 §6.3/§6.4: tag=value list starting with v=DMARC1; None if unusable."""
    tags: dict[str, str] = {}
    for i, part in enumerate(text.split(";")):
        k, eq, v = part.strip().partition("=")
        if not eq:
            if part.strip():
                return None
            continue
        tags.setdefault(k.strip().lower(), v.strip())
        if i == 0 and (k.strip() != "v" or v.strip() != "DMARC1"):
            return None  # §6.4: v=DMARC1 must come first
    p = tags.get("p", "").lower()
    if p not in ("none", "quarantine", "reject"):
        return None  # §6.6.3: no valid policy; we treat it as no record
    sp = tags.get("sp", "").lower() or None
    if sp not in (None, "none", "quarantine", "reject"):
        sp = None
    pct = tags.get("pct", "100")
    return DmarcRecord(p, sp, "s" if tags.get("adkim", "r").lower() == "s" else "r",
                       "s" if tags.get("aspf", "r").lower() == "s" else "r",
                       min(max(int(pct), 0), 100) if pct.isdigit() else 100)


async def fetch_record(domain: str, resolver: Resolver) -> tuple[DmarcRecord | None, str]:
    """The record for `domain`, else for its organizational domain (§6.6.3).

    Returns (record, "" | "org") ; raises TempError."""
    for name, where in ((domain, ""), (org_domain(domain), "org")):
        if where == "org" and name == domain.lower():
            break
        try:
            txts = await resolver.lookup(f"_dmarc.{name}", "TXT")
        except NotFound:
            txts = []
        recs = [t for t in txts if t.replace(" ", "").startswith("v=DMARC1")]
        if len(recs) == 1:  # §6.6.3: more than one record means none
            rec = parse_record(recs[0])
            if rec is not None:
                return rec, where
    return None, ""


def evaluate(from_domain: str, record: DmarcRecord | None, where: str, *,
             spf: tuple[str, str], dkim_passes: list[str],
             temp: bool = False, rnd: float | None = None) -> DmarcResult:
    """RFC 7489 §6.6.2: pass if SPF (result, domain) or any passing DKIM d= aligns.

    `temp` says a check ended in a temporary error: a message that does not pass is then
    a temperror (the caller defers: fail closed), not a fail.
    """
    if record is None:
        return DmarcResult("none", "none", "none", from_domain)
    sub = where == "org" and from_domain.lower() != org_domain(from_domain)
    policy = record.sp if sub and record.sp else record.p
    spf_ok = spf[0] == "pass" and aligned(spf[1], from_domain, record.aspf)
    dkim_ok = any(aligned(d, from_domain, record.adkim) for d in dkim_passes)
    if spf_ok or dkim_ok:
        return DmarcResult("pass", policy, "none", from_domain)
    if temp:
        return DmarcResult("temperror", policy, "none", from_domain)
    disposition = policy
    if record.pct < 100 and (rnd if rnd is not None else random.random()) * 100 >= record.pct:
        # §6.6.4: outside the sample, apply the next less strict policy.
        disposition = {"reject": "quarantine", "quarantine": "none"}.get(policy, "none")
    return DmarcResult("fail", policy, disposition, from_domain)


__all__ += ["TempError"]
