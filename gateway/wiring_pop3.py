"""Wires POP3 (mailrelay.pop3) into the process: listeners `pop3` (STLS) and `pop3s`."""

from __future__ import annotations

from typing import Any

from cxkernel.limiter import limiter_for
from gateway.app import COMPONENT_FACTORIES, Endpoint, Services
from mailrelay.imap.pgstore import PgMailStore
from mailrelay.pop3.server import Pop3Config, Pop3Server


class Pop3Wiring:
    name = "pop3"

    def __init__(self, s: Services) -> None:
        self.s = s
        c = s.cfg.pop3
        self.server = Pop3Server(s.db.pool, PgMailStore(s.db.pool), s.auth, s.tls,
                                 Pop3Config(idle_timeout=c.idle_timeout,
                                            unauth_timeout=c.unauth_timeout),
                                 {r: limiter_for(s.cfg.limits, r, s.metrics)
                                  for r in ("pop3", "pop3s")})
        s.components["pop3"] = self.server

    async def start(self) -> list[Endpoint]:
        out: list[Endpoint] = []
        for role in ("pop3", "pop3s"):
            addr = self.s.cfg.listen_addr(role)
            if addr is None:
                continue
            implicit = role == "pop3s"
            port = await self.server.listen(addr[0], addr[1], implicit)
            out.append(Endpoint(role, "pop3", addr[0], port,
                                "implicit" if implicit else "starttls"))
        return out

    async def stop(self) -> None:
        await self.server.stop()


def factory(s: Services) -> Any:
    return Pop3Wiring(s)


COMPONENT_FACTORIES.append(factory)
