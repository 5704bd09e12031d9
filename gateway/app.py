"""The one server process: opens the database, builds the services, starts the components.

A component is anything with listeners or background tasks (mail, IMAP, XMPP, HTTP). It is
built from explicit services, returns the endpoints it listens on from `start()`, and
finishes its in-flight work in `stop()`. `serve()` prints one line per endpoint, then
`cxgw ready`, and stops cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from cxkernel.config import Config
from cxkernel.events import EventBus
from cxkernel.limiter import limiter_for, peer_ip
from cxkernel.listen import Listener
from cxkernel.metrics import Metrics
from directory.auth import Authenticator
from directory.nodes import Node
from directory.service import DirectoryService, DirectorySettings
from gateway.db import Database
from gateway.http import HTTPServer, Limits, Request, Response
from gateway.tls import channel_binding, ensure_self_signed, server_context

log = logging.getLogger("cxgw")


@dataclass(frozen=True)
class Endpoint:
    name: str  # config key, e.g. "smtp", "imaps"
    protocol: str  # "smtp", "imap", "xmpp", "http"
    host: str
    port: int
    tls: str  # "none", "starttls", "implicit"

    def line(self) -> str:
        return f"listening {self.name:<12} {self.protocol}://{self.host}:{self.port} tls={self.tls}"


@dataclass
class Services:
    """Everything a component may use; passed down explicitly, no globals."""

    cfg: Config
    db: Database
    directory: DirectoryService
    auth: Authenticator
    tls: ssl.SSLContext
    # This process among several on one database (started first, stopped last by
    # RunningServer), and the one self-healing LISTEN connection every component shares.
    node: Node
    listen: Listener
    bus: EventBus = field(default_factory=EventBus)
    metrics: Metrics = field(default_factory=Metrics)
    http: HTTPServer = field(default_factory=HTTPServer)
    # Components publish what sibling wiring needs here (e.g. "mail" for documents).
    components: dict[str, Any] = field(default_factory=dict)


class Component(Protocol):
    name: str

    async def start(self) -> list[Endpoint]: ...

    async def stop(self) -> None: ...


def directory_settings(cfg: Config) -> DirectorySettings:
    return DirectorySettings(
        domain=cfg.server.domain, scram_iterations=cfg.auth.scram_iterations,
        min_password_length=cfg.auth.min_password_length,
        lockout_failures=cfg.auth.lockout_failures, lockout_seconds=cfg.auth.lockout_seconds,
        auth_cache_seconds=cfg.auth.cache_seconds,
        penalty_max_seconds=cfg.auth.penalty_max_seconds,
        penalty_free_failures=cfg.auth.penalty_free_failures,
        penalty_window=cfg.auth.penalty_window)


async def open_services(cfg: Config, *, pool_max: int | None = None) -> Services:
    """Open the database (migrating it) and build the shared services."""
    cfg.state_path.mkdir(parents=True, exist_ok=True)
    db = await Database.open(cfg, pool_max=pool_max,
                             pool_min=min(cfg.database.pool_min, pool_max or cfg.database.pool_min))
    settings = directory_settings(cfg)
    if cfg.tls.cert:
        cert, key = cfg.tls.cert, cfg.tls.key
    else:
        c, k = ensure_self_signed(cfg.state_path, cfg.server.host_name, cfg.server.domain)
        cert, key = str(c), str(k)
    from pathlib import Path
    tls = server_context(Path(cert), Path(key))
    metrics = Metrics()
    auth = Authenticator(db.pool, settings, metrics)
    auth.channel_binding = channel_binding(Path(cert))
    return Services(cfg, db, DirectoryService(db.pool, settings), auth, tls,
                    Node(db.pool, cfg.node), Listener(db.pool), metrics=metrics)


def _capped(limiter: Any, handle: Any) -> Any:
    """An accept callback that applies the connection caps before `handle` (HTTP 503)."""
    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ticket = limiter.admit(peer_ip(writer.transport))  # caps (cxkernel.limiter)
        if ticket is None:
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n"
                         b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            writer.close()
            return
        try:
            await handle(reader, writer)
        finally:
            ticket.release()
    return accept


class HTTPComponent:
    """The `http` and `https` listeners with /health and /metrics (others add routes to
    services.http); both serve the same routes."""

    name = "http"

    def __init__(self, services: Services) -> None:
        self.s = services
        self.servers: list[asyncio.base_events.Server] = []
        h = services.cfg.http
        services.http.limits = Limits(header_timeout=h.header_timeout,
                                      body_timeout=h.body_timeout,
                                      idle_timeout=h.idle_timeout, max_header=h.max_header)
        services.http.route("/health", self._health)
        services.http.route("/metrics", self._metrics)

    async def _health(self, req: Request) -> Response:
        async with self.s.db.pool.acquire() as conn:
            await conn.fetchval("select 1")
        return Response(200, b"ok\n")

    async def _metrics(self, req: Request) -> Response:
        return Response(200, self.s.metrics.render().encode(), "text/plain; version=0.0.4")

    async def start(self) -> list[Endpoint]:
        out = []
        # one connection limiter for both HTTP listeners (cxkernel.limiter, [limits] http_*)
        limiter = limiter_for(self.s.cfg.limits, "http", self.s.metrics)
        for name, tls in (("http", None), ("https", self.s.tls)):
            addr = self.s.cfg.listen_addr(name)
            if addr is None:
                continue
            # The accept path of both listeners: the cap, then HTTPServer.handle_connection.
            server = await asyncio.start_server(
                _capped(limiter, self.s.http.connection_handler(name)), addr[0], addr[1],
                ssl=tls, ssl_handshake_timeout=self.s.cfg.http.header_timeout if tls else None)
            self.servers.append(server)
            port = server.sockets[0].getsockname()[1]
            out.append(Endpoint(name, "http", addr[0], port, "implicit" if tls else "none"))
        return out

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for server in self.servers:
            await server.wait_closed()
        self.servers.clear()


def build_components(services: Services) -> list[Component]:
    """Every component of the process, in start order (HTTP last: it serves their routes)."""
    components: list[Component] = []
    for factory in COMPONENT_FACTORIES:
        components.append(factory(services))
    components.append(HTTPComponent(services))
    return components


# Protocol components register here (gateway imports mailrelay and xmpp, never the reverse).
COMPONENT_FACTORIES: list[Any] = []


def _load_factories() -> None:
    """Import the protocol wiring modules that exist; each appends its factory."""
    import importlib
    for mod in ("gateway.wiring_mail", "gateway.wiring_imap", "gateway.wiring_pop3",
                "gateway.wiring_sieve", "gateway.wiring_xmpp",
                "gateway.wiring_docs", "gateway.bridge_docs", "gateway.maintenance"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            # Issue #11: a missing wiring module (documents above all: the trust path)
            # stops the start with a clear error instead of running without it.
            raise RuntimeError(f"cannot start: wiring module {mod} is missing"
                               f" ({exc})") from exc


class RunningServer:
    """The whole server started in this event loop (used by `run_server` and by tests)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.started: list[Component] = []
        self.endpoints: list[Endpoint] = []
        self._node_started = False

    @property
    def ports(self) -> dict[str, int]:
        return {ep.name: ep.port for ep in self.endpoints}

    async def start(self) -> None:
        _load_factories()
        await self.services.node.start()
        self._node_started = True
        for comp in build_components(self.services):
            self.started.append(comp)  # stop() must cope with a component whose start() failed
            self.endpoints.extend(await comp.start())

    async def stop(self) -> None:
        for comp in reversed(self.started):
            try:
                await asyncio.wait_for(comp.stop(), 30)
            except Exception:
                log.exception("component %s did not stop cleanly", comp.name)
        self.started.clear()
        await self.services.listen.stop()
        if self._node_started:
            self._node_started = False
            await self.services.node.stop()


async def run_server(cfg: Config, out: TextIO = sys.stdout,
                     stop_event: asyncio.Event | None = None) -> None:
    """Start everything, print the endpoints and `cxgw ready`, run until stopped."""
    t0 = time.monotonic()
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    services = await open_services(cfg)
    server = RunningServer(services)
    try:
        await server.start()
        for ep in server.endpoints:
            print(ep.line(), file=out, flush=True)
        print(f"database {'embedded ' + str(services.db.embedded.pgdata) if services.db.embedded else 'external'}",
              file=out, flush=True)
        # Everything built at start-up lives as long as the process: keep it out of the
        # cyclic GC's scans, and collect the young generation less often (a router
        # allocates elements at a high rate; most die young without cycles).
        gc.freeze()
        gc.set_threshold(20000, 20, 20)
        print(f"cxgw ready ({time.monotonic() - t0:.2f}s)", file=out, flush=True)
        log.info("ready in %.2fs", time.monotonic() - t0)
        await stop.wait()
        print("cxgw stopping", file=out, flush=True)
    finally:
        await server.stop()
        await services.db.close()
        print("cxgw stopped", file=out, flush=True)
