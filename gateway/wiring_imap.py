"""Wires the IMAP server (mailrelay.imap) into the process: listeners `imap` and `imaps`."""

from __future__ import annotations

from typing import Any

from cxkernel.limiter import limiter_for
from gateway.app import COMPONENT_FACTORIES, Endpoint, Services
from mailrelay.imap.hub import ChangeHub
from mailrelay.imap.pgstore import PgMailStore
from mailrelay.imap.server import ImapListenerConfig, ImapServer


class ImapWiring:
    name = "imap"

    def __init__(self, s: Services) -> None:
        self.s = s
        c = s.cfg.imap
        store = PgMailStore(s.db.pool, max_keywords=c.max_keywords)
        cfg = ImapListenerConfig(idle_timeout=c.idle_timeout,
                                 max_unauth_bytes=c.max_unauth_bytes,
                                 append_limit=c.append_limit,
                                 max_command_bytes=c.max_command_bytes,
                                 append_spool_bytes=c.append_spool_bytes,
                                 spool_dir=c.spool_dir or None)
        limiters = {r: limiter_for(s.cfg.limits, r, s.metrics) for r in ("imap", "imaps")}
        self.server = ImapServer(store, ChangeHub(s.db.pool, store, s.listen), s.auth, s.tls,
                                 cfg, limiters)
        s.components["imap"] = self.server

    async def start(self) -> list[Endpoint]:
        out: list[Endpoint] = []
        roles = [(r, self.s.cfg.listen_addr(r)) for r in ("imap", "imaps")]
        if not any(addr for _, addr in roles):
            return out
        await self.server.hub.start()
        for role, addr in roles:
            if addr is None:
                continue
            implicit = role == "imaps"
            port = await self.server.listen(addr[0], addr[1], implicit)
            out.append(Endpoint(role, "imap", addr[0], port,
                                "implicit" if implicit else "starttls"))
        return out

    async def stop(self) -> None:
        await self.server.stop()


def factory(s: Services) -> Any:
    return ImapWiring(s)


COMPONENT_FACTORIES.append(factory)
