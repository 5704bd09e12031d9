"""A tiny in-process event bus with priorities (Prosody `util/events.lua`).

Handlers are called in priority order (highest first); the first handler that returns a
value other than None wins and stops the chain. Both sync and async handlers are allowed.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

Handler = Callable[[Any], Any | Awaitable[Any]]


class EventBus:
    """Named extension points; features meet here instead of importing each other."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[tuple[int, int, Handler]]] = {}
        self._seq = 0

    def on(self, name: str, handler: Handler, priority: int = 0) -> None:
        self._seq += 1
        lst = self._handlers.setdefault(name, [])
        lst.append((priority, -self._seq, handler))
        lst.sort(key=lambda t: (t[0], t[1]), reverse=True)

    def off(self, name: str, handler: Handler) -> None:
        lst = self._handlers.get(name, [])
        self._handlers[name] = [t for t in lst if t[2] is not handler]

    def has(self, name: str) -> bool:
        return bool(self._handlers.get(name))

    async def fire(self, name: str, event: Any) -> Any:
        """Run handlers in priority order; return the first non-None result."""
        for _prio, _seq, handler in list(self._handlers.get(name, ())):
            result = handler(event)
            if inspect.isawaitable(result):
                result = await result
            if result is not None:
                return result
        return None
