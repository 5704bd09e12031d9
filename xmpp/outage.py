"""Riding out a database outage with bounded memory (issue 13 item 4).

A write that must not be lost (an offline message) is retried with backoff while the
database is away, holding the stanza in memory. What may be held is bounded: at most
`xmpp.outage_buffer_bytes` in all, each for at most `xmpp.outage_retry_seconds`. When
the budget is spent the write fails with a stanza error the sender sees (RFC 6120
§8.3.3.18 ``resource-constraint``, type ``wait``: try again later), never silence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

from .proto.errors import StanzaError

log = logging.getLogger("cxgw.xmpp.outage")

T = TypeVar("T")


class OutageBudget:
    def __init__(self, max_bytes: int, max_seconds: float, *, first_delay: float = 0.05,
                 max_delay: float = 1.0) -> None:
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.held = 0  # bytes of writes waiting for the database now
        self.refused = 0  # writes given up (the sender got resource-constraint)

    async def run(self, size: int, op: Callable[[], Awaitable[T]], what: str) -> T:
        """`op()`, retried through errors (not StanzaError) within the budget."""
        try:
            return await op()
        except StanzaError:
            raise
        except Exception as exc:  # noqa: BLE001 - the database is away: hold and retry
            first = exc
        if self.held + size > self.max_bytes:
            return self._give_up(what, first, "buffer full")
        self.held += size
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_seconds
        delay = self.first_delay
        try:
            while True:
                if loop.time() + delay > deadline:
                    return self._give_up(what, first, "outage too long")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_delay)
                try:
                    return await op()
                except StanzaError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    first = exc
        finally:
            self.held -= size

    def _give_up(self, what: str, exc: BaseException, why: str) -> NoReturn:
        self.refused += 1
        log.warning("%s refused (%s): %s", what, why, exc)
        raise StanzaError("resource-constraint", "storage temporarily unavailable, try again",
                          type="wait")
