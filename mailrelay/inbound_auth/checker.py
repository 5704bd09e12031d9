"""One verdict for one message from outside: SPF, DKIM, ARC, DMARC, and the header.

`InboundAuth.check()` runs the checks, and answers what the SMTP handler does at DATA:
accept (with our Authentication-Results prepended and any forged one of ours removed),
quarantine (the same, delivered into Junk), reject (550 5.7.1, RFC 7489 §6.6.2/§10.3)
or defer (451 4.7.0 when a temporary DNS failure left the verdict open: fail closed).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from email.utils import getaddresses

from mailrelay.headers import field_values
from mailrelay.inbound_auth import dkimverify, dmarc, results, spf
from mailrelay.inbound_auth.dns import Resolver, TempError

__all__ = ["InboundAuth", "Verdict"]

log = logging.getLogger("cxgw.inbound_auth")


@dataclass(frozen=True)
class Verdict:
    action: str  # accept | quarantine | reject | defer
    raw: bytes  # the message with our Authentication-Results on top
    reply: str = ""  # the SMTP reply for reject / defer
    header: bytes = b""


class InboundAuth:
    """Checks for the port-25 role. `enforce` applies DMARC reject and quarantine."""

    def __init__(self, resolver: Resolver, authserv_id: str, *, enforce: bool = True,
                 check_loopback: bool = False) -> None:
        self.resolver = resolver
        self.authserv_id = authserv_id
        self.enforce = enforce
        self.check_loopback = check_loopback

    def applies(self, ip: str) -> bool:
        """Is a client at `ip` from outside? Loopback clients are local software."""
        try:
            return self.check_loopback or not ipaddress.ip_address(ip).is_loopback
        except ValueError:
            return True

    async def check(self, raw: bytes, *, ip: str, helo: str, mail_from: str) -> Verdict:
        spf_task = asyncio.ensure_future(spf.check_host(ip, mail_from, helo, self.resolver))
        try:
            sigs, arc = await dkimverify.verify_all(raw, self.resolver)
        finally:
            spf_res = await spf_task
        parts: list[tuple[str, str, str, list[tuple[str, str]]]] = []
        # RFC 8601 §2.7.2: smtp.mailfrom (or smtp.helo for the null sender).
        ident = ("smtp.mailfrom", mail_from or spf_res.domain) if spf_res.identity == "mailfrom" \
            else ("smtp.helo", helo)
        parts.append(("spf", spf_res.result, "", [ident]))
        for s in sigs:
            parts.append(("dkim", s.result, "", [("header.d", s.domain), ("header.s", s.selector),
                                                 ("header.b", s.b)]))
        if not sigs:
            parts.append(("dkim", "none", "", []))

        froms = [a for _n, a in getaddresses(field_values(raw, "From")) if a]
        domains = {a.rpartition("@")[2].lower().rstrip(".") for a in froms}
        action, reply = "accept", ""
        if len(domains) > 1 or (froms and "" in domains):
            # RFC 7489 §6.6.1: one author domain is needed to apply a policy.
            parts.append(("dmarc", "permerror", "multiple From: domains", []))
            if self.enforce:
                action, reply = "reject", "550 5.7.1 One From: address domain is required"
        elif domains:
            from_domain = next(iter(domains))
            temp = spf_res.result == "temperror" or any(s.result == "temperror" for s in sigs)
            try:
                record, where = await dmarc.fetch_record(from_domain, self.resolver)
            except TempError:
                record, where, temp = None, "", True
                res = dmarc.DmarcResult("temperror", "none", "none", from_domain)
            else:
                res = dmarc.evaluate(from_domain, record, where,
                                     spf=(spf_res.result, spf_res.domain),
                                     dkim_passes=[s.domain for s in sigs if s.result == "pass"],
                                     temp=temp)
            comment = f"p={res.policy} dis={res.disposition}" if record else ""
            parts.append(("dmarc", res.result, comment, [("header.from", from_domain)]))
            if self.enforce:
                if res.result == "temperror" and (record is None or res.policy != "none"):
                    # Fail closed: a missing piece of the trust path defers.
                    action = "defer"
                    reply = "451 4.7.0 Temporary authentication failure; try again later"
                elif res.disposition == "reject":
                    action = "reject"
                    reply = f"550 5.7.1 Message rejected by the DMARC policy of {from_domain}"
                elif res.disposition == "quarantine":
                    action = "quarantine"
        else:
            parts.append(("dmarc", "none", "no From: domain", []))
        if arc.result != "none":
            parts.append(("arc", arc.result, "", []))  # RFC 8617 §4.2 "arc" method
        header = results.format_header(self.authserv_id, parts)
        stamped = header + results.strip_ours(raw, self.authserv_id)
        log.info("inbound auth client=%s from=<%s> %s -> %s", ip, mail_from,
                 "; ".join(f"{m}={r}" for m, r, _c, _p in parts), action)
        return Verdict(action, stamped, reply, header)
