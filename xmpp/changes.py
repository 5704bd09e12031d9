"""Row changes that per-node feature caches must hear from every node (issue 14 item 6).

A feature that keeps rows in memory on each node (blocklists, archive preferences) or
pushes a change to its sessions (roster, blocklist pushes) writes a *notice* in the same
transaction as the rows: ``pg_notify(CHANNEL, ...)`` (``xmpp.repo.notify_changes``) is delivered at COMMIT, to every
node, in commit order. Each node hears the channel through the process's self-healing
LISTEN connection (``cxkernel.listen``) and runs the feature's handler for the notice, one
at a time in arrival order. After the LISTEN connection came back, notices sent
meanwhile are lost: every feature's ``reset`` runs (drop caches, reload from PostgreSQL).

A notice is ``origin<US>kind<US>owner<US>item<US>item…``. ``origin`` names the process
that wrote it; that process already applied the change itself, so it skips its own
notices. Items that do not fit one payload are split over several notices
(``payloads``): handlers must treat a notice as a delta that may be one of several.

The rule for new features (docs/NOTES.md): a cache of rows kept across stanzas registers
here with ``on(kind, handler, reset)``, and every write of those rows passes
``payloads(kind, ...)`` to its store, which NOTIFYs inside the write's transaction.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence

from cxkernel.listen import Listener, Subscription

log = logging.getLogger("cxgw.xmpp.changes")

#: The one channel of feature-cache notices (an identifier: under 63 bytes).
CHANNEL = "cxgw_xmpp_changes"
#: NOTIFY payloads must stay under 8,000 bytes (PostgreSQL's default limit).
PAYLOAD_LIMIT = 7800
US = "\x1f"  # never valid in a JID or in XML 1.0 text

Handler = Callable[[str, list[str]], Awaitable[None]]
Reset = Callable[[], Awaitable[None]]


class Changes:
    """Handlers by notice kind, fed from the LISTEN channel in arrival order."""

    def __init__(self) -> None:
        self.origin = secrets.token_hex(6)
        self._handlers: dict[str, Handler] = {}
        self._resets: list[Reset] = []
        self._inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None
        self.heard = 0  # notices of other processes handled (tests, metrics)
        self.resets = 0  # catch-ups after a LISTEN reconnect

    def on(self, kind: str, handler: Handler, reset: Reset | None = None) -> None:
        """`handler(owner, items)` runs for another node's notice of `kind`; `reset`
        after a LISTEN reconnect (reload what the node keeps)."""
        if US in kind or kind in self._handlers:
            raise ValueError(f"bad or duplicate change kind {kind!r}")
        self._handlers[kind] = handler
        if reset is not None:
            self._resets.append(reset)

    def payloads(self, kind: str, owner: str, items: Sequence[str] = ()) -> list[str]:
        """The notices announcing that `owner`'s rows of `kind` changed (`items`: what
        changed, split over several notices when they do not fit one)."""
        head = f"{self.origin}{US}{kind}{US}{owner}"
        out: list[str] = []
        cur = head
        for item in items:
            if len(item.encode()) + len(head.encode()) + 1 > PAYLOAD_LIMIT:
                raise ValueError("a change item larger than a NOTIFY payload")
            if len((cur + US + item).encode()) > PAYLOAD_LIMIT:
                out.append(cur)
                cur = head
            cur += US + item
        out.append(cur)
        return out

    # -- life -------------------------------------------------------------------------------
    async def start(self, listener: Listener) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run())
        self._sub = await listener.subscribe(CHANNEL, self._hear, self._catch_up)

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.close()
        if self._task is not None:
            self._inbox.put_nowait(None)
            task, self._task = self._task, None
            await task

    def _hear(self, payload: str) -> None:
        if not payload.startswith(self.origin + US):
            self._inbox.put_nowait(payload)

    async def _catch_up(self) -> None:
        """The LISTEN connection came back: notices may have been missed."""
        log.info("xmpp: LISTEN reconnected, feature caches reload")
        for reset in self._resets:
            try:
                await reset()
            except Exception:
                log.exception("xmpp: a feature cache could not reload")
        self.resets += 1

    async def _run(self) -> None:
        while True:
            payload = await self._inbox.get()
            if payload is None:
                return
            parts = payload.split(US)
            if len(parts) < 3:
                log.warning("xmpp: malformed change notice %r", payload[:80])
                continue
            handler = self._handlers.get(parts[1])
            if handler is None:
                continue  # a kind this node's features do not keep (other feature set)
            try:
                await handler(parts[2], parts[3:])
                self.heard += 1
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("xmpp: a change notice (%s) could not be applied", parts[1])

