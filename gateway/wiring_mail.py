"""Wires the mail component (mailrelay) into the process."""

from __future__ import annotations

from typing import Any

from gateway.app import COMPONENT_FACTORIES, Endpoint, Services
from mailrelay.service import MailComponent


class MailWiring:
    name = "mail"

    def __init__(self, s: Services) -> None:
        self.component = MailComponent(s.db.pool, s.cfg, s.auth, s.tls, s.metrics,
                                       node=s.node, listener=s.listen)
        s.components["mail"] = self.component

    async def start(self) -> list[Endpoint]:
        return [Endpoint(role, "smtp", host, port, tls)
                for role, host, port, tls in await self.component.start()]

    async def stop(self) -> None:
        await self.component.stop()


def factory(s: Services) -> Any:
    return MailWiring(s)


COMPONENT_FACTORIES.append(factory)
