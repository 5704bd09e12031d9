"""Synchronous hooks for the routing hot path (Prosody ``util/events.lua`` semantics).

The process-wide ``cxkernel.events.EventBus`` is async; awaiting it for every routed
message would cost a coroutine per stanza. The few extension points on the hot path are
synchronous instead: handlers run highest priority first and the first one returning a
value other than None wins. Points (see ``xmpp.router``):

- ``stanza/inbound`` ``(stanza, origin, to_bare)``: a stanza to a local account, before
  delivery; return True to consume it (XEP-0191 blocking).
- ``message/routed`` ``(stanza, origin, to_bare, delivered)``: a message was delivered to
  the sessions in `delivered` (possibly none: it went offline) (XEP-0280 carbons).
- ``muc/message`` ``(MucMessage)``: a room broadcast a groupchat message (the archive
  queues it; every handler is called).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SyncHandler = Callable[..., Any]


class Hooks:
    """Named synchronous extension points with priorities."""

    __slots__ = ("_handlers", "_prio")

    def __init__(self) -> None:
        self._handlers: dict[str, tuple[SyncHandler, ...]] = {}
        self._prio: dict[str, list[tuple[int, int, SyncHandler]]] = {}

    def on(self, name: str, handler: SyncHandler, priority: int = 0) -> None:
        lst = self._prio.setdefault(name, [])
        lst.append((priority, -len(lst), handler))
        lst.sort(key=lambda t: (t[0], t[1]), reverse=True)
        self._handlers[name] = tuple(t[2] for t in lst)

    def off(self, name: str, handler: SyncHandler) -> None:
        lst = [t for t in self._prio.get(name, []) if t[2] is not handler]
        self._prio[name] = lst
        self._handlers[name] = tuple(t[2] for t in lst)

    def handlers(self, name: str) -> tuple[SyncHandler, ...]:
        """The handlers of `name` in call order (empty tuple when none: test it cheaply)."""
        return self._handlers.get(name, ())

    def fire(self, name: str, *args: Any) -> Any:
        for handler in self._handlers.get(name, ()):
            result = handler(*args)
            if result is not None:
                return result
        return None
