"""Wires ManageSieve (mailrelay.sieve) into the process: listener `managesieve`."""

from __future__ import annotations

from typing import Any

from cxkernel.limiter import limiter_for
from gateway.app import COMPONENT_FACTORIES, Endpoint, Services
from mailrelay.sieve.managesieve import ManageSieveConfig, ManageSieveServer


class SieveWiring:
    name = "managesieve"

    def __init__(self, s: Services) -> None:
        self.s = s
        self.server = ManageSieveServer(s.db.pool, s.auth, s.tls,
                                        ManageSieveConfig(max_scripts=s.cfg.sieve.max_scripts),
                                        limiter_for(s.cfg.limits, "managesieve", s.metrics))
        s.components["managesieve"] = self.server

    async def start(self) -> list[Endpoint]:
        addr = self.s.cfg.listen_addr("managesieve")
        if addr is None:
            return []
        port = await self.server.listen(addr[0], addr[1])
        return [Endpoint("managesieve", "sieve", addr[0], port, "starttls")]

    async def stop(self) -> None:
        await self.server.stop()


def factory(s: Services) -> Any:
    return SieveWiring(s)


COMPONENT_FACTORIES.append(factory)
