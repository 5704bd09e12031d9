"""A test DNS zone: an in-process resolver (unit tests) and a small authoritative DNS
server on 127.0.0.1 (integration tests point `inbound_auth.dns_servers` at it), both
answering from one dict. Never the internet.

Zone: {(name, rtype): [values]}; TXT values are strings, MX "pref host", A/AAAA
addresses; a value "SERVFAIL" makes that query fail temporarily. A name with no entry
of any type does not exist (NXDOMAIN); a name with entries of other types has no data.
"""

from __future__ import annotations

import asyncio
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from mailrelay.inbound_auth.dns import NotFound, TempError

Zone = dict[tuple[str, str], list[str]]


class ZoneResolver:
    """The `Resolver` interface over a zone dict; counts queries."""

    def __init__(self, zone: Zone) -> None:
        self.zone = {(n.lower().rstrip("."), t): v for (n, t), v in zone.items()}
        self.queries: list[tuple[str, str]] = []

    async def lookup(self, name: str, rtype: str) -> list[str]:
        name = name.lower().rstrip(".")
        self.queries.append((name, rtype))
        values = self.zone.get((name, rtype))
        if values == ["SERVFAIL"]:
            raise TempError(name)
        if values is not None:
            return list(values)
        if any(n == name for n, _t in self.zone):
            return []
        raise NotFound(name)


def _txt(value: str) -> str:
    chunks = [value[i:i + 255] for i in range(0, len(value), 255)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


class ZoneServer(asyncio.DatagramProtocol):
    """UDP DNS on 127.0.0.1:port answering from the zone (dnspython builds the packets)."""

    def __init__(self, zone: Zone) -> None:
        self.zone = {(n.lower().rstrip("."), t): v for (n, t), v in zone.items()}
        self.transport: Any = None
        self.port = 0

    @classmethod
    async def start(cls, zone: Zone) -> ZoneServer:
        loop = asyncio.get_running_loop()
        srv = cls(zone)
        await loop.create_datagram_endpoint(lambda: srv, local_addr=("127.0.0.1", 0))
        srv.port = srv.transport.get_extra_info("sockname")[1]
        return srv

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            q = dns.message.from_wire(data)
        except Exception:
            return
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AA
        question = q.question[0]
        name = question.name.to_text().rstrip(".").lower()
        rtype = dns.rdatatype.to_text(question.rdtype)
        values = self.zone.get((name, rtype))
        if values == ["SERVFAIL"]:
            r.set_rcode(dns.rcode.SERVFAIL)
        elif values:
            texts = [_txt(v) if rtype == "TXT" else (v if rtype != "MX" else
                     f"{v.split()[0]} {v.split()[1]}.") for v in values]
            r.answer.append(dns.rrset.from_text_list(question.name, 60, "IN", rtype, texts))
        elif not any(n == name for n, _t in self.zone):
            r.set_rcode(dns.rcode.NXDOMAIN)
        self.transport.sendto(r.to_wire(), addr)

    def close(self) -> None:
        self.transport.close()
