"""One connection limiter for every listener: total and per-address caps, and a pre-login
deadline.

A listener asks ``admit(peer, on_deadline)`` in its accept callback (``connection_made``).
Refused: the caller sends its protocol's polite refusal (SMTP ``421 4.7.0``, IMAP
``* BYE``, XMPP ``<policy-violation/>``, HTTP 503) and closes; that costs one INFO line
here and a counter, never a traceback. Admitted: a ``Ticket`` that the caller releases
when the connection ends and marks ``authenticated()`` at login. Until then a deadline
runs from the moment of connecting: bytes arriving do not extend it (a client sending a
byte every few seconds is closed at the deadline like a silent one).

Counted per process (live connections are a process's own state); the address key is the
IPv4 address or the IPv6 /64, so one host cannot take the cap by rotating addresses.
Metrics: ``connections_accepted_total{listener}``, ``connections_refused_total{listener,
reason}``, ``connections_preauth_timeout_total{listener}`` and a gauge
``connections_open_<listener>``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass

from cxkernel.config import LimitsConfig
from cxkernel.metrics import Metrics

log = logging.getLogger("cxgw.limits")


@dataclass(frozen=True)
class ListenerLimits:
    max_connections: int = 1000
    max_per_ip: int = 50
    preauth_seconds: float = 60.0  # 0: no deadline


def address_key(ip: str) -> str:
    """The per-address key: the IPv4 address, or the /64 of an IPv6 address."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return ip


def peer_ip(transport: object) -> str:
    """The client's IP address from an asyncio (or uvloop) transport."""
    get = getattr(transport, "get_extra_info", None)
    peer = get("peername") if get is not None else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


class Ticket:
    """One admitted connection."""

    __slots__ = ("_limiter", "key", "_timer", "_released")

    def __init__(self, limiter: ConnectionLimiter, key: str) -> None:
        self._limiter = limiter
        self.key = key
        self._timer: asyncio.TimerHandle | None = None
        self._released = False

    def authenticated(self) -> None:
        """The client logged in: the pre-login deadline no longer applies."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def pending(self) -> bool:
        """Whether the pre-login deadline is still running."""
        return self._timer is not None

    def release(self) -> None:
        """The connection is gone (idempotent)."""
        if self._released:
            return
        self._released = True
        self.authenticated()
        self._limiter._release(self.key)


class ConnectionLimiter:
    """The caps of one listener (``name`` as in ``[listen]``)."""

    def __init__(self, name: str, limits: ListenerLimits, metrics: Metrics | None = None) -> None:
        self.name = name
        self.limits = limits
        self.metrics = metrics or Metrics()
        self.active = 0
        self.by_ip: dict[str, int] = {}
        self.metrics.gauge(f"connections_open_{name}", lambda: float(self.active),
                           f"open connections on the {name} listener")

    def admit(self, ip: str, on_deadline: Callable[[], None] | None = None) -> Ticket | None:
        """A new connection from `ip`: a Ticket, or None if a cap is reached."""
        key = address_key(ip)
        n = self.by_ip.get(key, 0)
        reason = ("total" if self.active >= self.limits.max_connections else
                  "per-ip" if n >= self.limits.max_per_ip else None)
        if reason is not None:
            self.metrics.inc("connections_refused_total", listener=self.name, reason=reason)
            log.info("connection refused listener=%s remote=%s reason=%s", self.name, ip,
                     reason)
            return None
        self.active += 1
        self.by_ip[key] = n + 1
        self.metrics.inc("connections_accepted_total", listener=self.name)
        ticket = Ticket(self, key)
        if on_deadline is not None and self.limits.preauth_seconds > 0:
            def expire() -> None:
                ticket._timer = None
                self.metrics.inc("connections_preauth_timeout_total", listener=self.name)
                log.info("connection closed listener=%s remote=%s reason=login-deadline",
                         self.name, ip)
                on_deadline()
            ticket._timer = asyncio.get_running_loop().call_later(
                self.limits.preauth_seconds, expire)
        return ticket

    def _release(self, key: str) -> None:
        self.active -= 1
        n = self.by_ip.get(key, 1) - 1
        if n > 0:
            self.by_ip[key] = n
        else:
            self.by_ip.pop(key, None)


def limiter_for(limits: LimitsConfig, name: str, metrics: Metrics | None = None
                ) -> ConnectionLimiter:
    """The limiter of listener `name` (``smtp``, ``imaps``, ``xmpp_component``...) as
    configured in ``[limits]``."""
    total, per_ip, preauth = limits.for_listener(name)
    return ConnectionLimiter(name, ListenerLimits(total, per_ip, preauth), metrics)
