"""End-to-end check: watch recipients' INBOXes over IMAP until every accepted message shows up.

Before the load starts, one IMAP connection per recipient mailbox logs in and notes
UIDNEXT, so login time never pollutes the measurement. While the load runs, each watcher
polls with NOOP (new `EXISTS` = something arrived) and, on change or every second,
`UID SEARCH UID n:* HEADER X-Load-Id <run-id>` plus a header FETCH to learn which messages
arrived. A delivery's e2e latency is "first byte of its transaction sent" to "search reply
that shows it"; the poll interval is the resolution.

Deliveries to recipients without a password in --credentials cannot be watched; they count
as delivered on 250 and are reported as `unverifiable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections.abc import Callable
from typing import Any

from load.imapclient import ImapClient
from load.message import LOAD_ID_HEADER
from load.options import Target
from load.smtpclient import classify
from load.stats import Recorder

_LOGIN_CONCURRENCY = 50


class ImapVerifier:
    """Watches mailboxes for this run's messages; reconciles into a Recorder at the end."""

    def __init__(self, target: Target, run_id: str, password_for: Callable[[str], str | None],
                 *, tls: bool = False, ssl_ctx: ssl.SSLContext | None = None,
                 timeout: float = 30.0, poll: float = 0.05,
                 header: str = LOAD_ID_HEADER) -> None:
        self.target = target
        self.run_id = run_id
        self.password_for = password_for
        self.tls = tls
        self.ssl_ctx = ssl_ctx
        self.timeout = timeout
        self.poll = max(poll, 0.005)
        self.header = header  # where the X-Load-Id travels (Subject for documents)
        self._lid = re.compile(re.escape(run_id).encode() + rb"-\d{8}")
        self.sent_at: dict[str, float] = {}
        self.expected: set[tuple[str, str]] = set()
        self.seen_at: dict[tuple[str, str], float] = {}
        self.watching: set[str] = set()
        self.unwatched: dict[str, str] = {}  # mailbox -> reason
        self.unverifiable = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._clients: list[ImapClient] = []
        self._stop = asyncio.Event()

    async def start(self, mailboxes: list[str]) -> None:
        """Log in to every mailbox we have a password for (before the load starts)."""
        sem = asyncio.Semaphore(_LOGIN_CONCURRENCY)

        async def one(mb: str) -> None:
            pw = self.password_for(mb)
            if pw is None:
                self.unwatched[mb] = "no password"
                return
            async with sem:
                try:
                    c = await ImapClient.connect(self.target, io_timeout=self.timeout,
                                                 ssl_ctx=self.ssl_ctx, implicit_tls=self.tls)
                    self._clients.append(c)
                    async with asyncio.timeout(self.timeout):
                        await c.login(mb, pw)
                        info = await c.select("INBOX")
                        base = info.get("UIDNEXT")
                        if base is None:
                            uids = await c.uid_search("ALL")
                            base = max(uids, default=0) + 1
                except Exception as e:
                    self.unwatched[mb] = classify(e)
                    return
            self.watching.add(mb)
            self._tasks.append(asyncio.ensure_future(self._watch(mb, c, base,
                                                                 info.get("EXISTS"))))

        await asyncio.gather(*(one(mb.lower()) for mb in dict.fromkeys(mailboxes)))

    def expect(self, lid: str, rcpts: list[str], t0: float) -> int:
        """Register an accepted message; returns how many of its recipients are watched."""
        self.sent_at.setdefault(lid, t0)
        n = 0
        for r in rcpts:
            mb = r.lower()
            if mb in self.watching:
                self.expected.add((lid, mb))
                n += 1
            else:
                self.unverifiable += 1
        return n

    async def _watch(self, mb: str, c: ImapClient, base: int, exists: int | None) -> None:
        last_search = 0.0
        try:
            while not self._stop.is_set():
                now_exists = await c.noop()
                changed = now_exists is not None and now_exists != exists
                exists = now_exists if now_exists is not None else exists
                if changed or time.monotonic() - last_search >= 1.0:
                    last_search = time.monotonic()
                    uids = [u for u in await c.uid_search(
                        f"UID {base}:* HEADER {self.header} {self.run_id}") if u >= base]
                    seen = time.monotonic()
                    if uids:
                        base = max(uids) + 1
                        for line in await c.uid_fetch(
                                ",".join(map(str, uids)),
                                f"(BODY.PEEK[HEADER.FIELDS ({self.header.upper()})])"):
                            for m in self._lid.finditer(line):
                                key = (m.group(0).decode("ascii", "replace"), mb)
                                self.seen_at.setdefault(key, seen)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.poll)
        except Exception as e:
            self.unwatched[mb] = f"watch stopped: {classify(e)}"

    def _all_seen(self) -> bool:
        return all(k in self.seen_at for k in self.expected)

    async def finish(self, rec: Recorder, wait_s: float) -> None:
        """Wait up to `wait_s` s for the rest to arrive, then settle the accounts."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not self._all_seen():
            if all(t.done() for t in self._tasks):
                break
            await asyncio.sleep(self.poll)
        self._stop.set()
        for key in sorted(self.expected):
            at = self.seen_at.get(key)
            if at is None:
                rec.lose("not-seen", 1)
            else:
                rec.seen(max(at - self.sent_at[key[0]], 0.0), at)

    def summary(self) -> dict[str, Any]:
        seen = sum(1 for k in self.expected if k in self.seen_at)
        return {"watched_mailboxes": len(self.watching), "expected": len(self.expected),
                "seen": seen, "not_seen": len(self.expected) - seen,
                "unverifiable": self.unverifiable,
                "unwatched": dict(sorted(self.unwatched.items())[:20])}

    async def close(self) -> None:
        self._stop.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(c.logout() for c in self._clients), return_exceptions=True)
