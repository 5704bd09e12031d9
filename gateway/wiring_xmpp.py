"""Wires the XMPP component into the process: endpoints `xmpp` (STARTTLS, RFC 6120 §5)
and `xmpps` (direct TLS, XEP-0368)."""

from __future__ import annotations

from typing import Any

from gateway.app import COMPONENT_FACTORIES, Endpoint, Services
from xmpp.service import XmppComponent


class XmppWiring:
    name = "xmpp"

    def __init__(self, s: Services) -> None:
        self.component = XmppComponent(s.db.pool, s.cfg, s.directory, s.auth, s.tls,
                                       s.bus, s.metrics)
        s.components["xmpp"] = self.component

    async def start(self) -> list[Endpoint]:
        return [Endpoint(role, "xmpp", host, port, tls)
                for role, host, port, tls in await self.component.start()]

    async def stop(self) -> None:
        await self.component.stop()


def factory(s: Services) -> Any:
    return XmppWiring(s)


COMPONENT_FACTORIES.append(factory)
