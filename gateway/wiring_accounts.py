"""Self-service passwords across protocols (issue 15 item 4): the directory changes the
password (its rules, new SCRAM keys) and NOTIFYs ``credentials_changed`` at COMMIT; this
component LISTENs (through the process's one self-healing `Services.listen`) and ends
that account's sessions here on every protocol — XMPP (live and hibernating), IMAP,
POP3 — except the one that made the change (web sessions are rows, deleted by the
directory in the same transaction). Several nodes: each ends its own.

It also answers the XMPP feature's ``account/password/set`` (XEP-0077) with the
directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from cxkernel.errors import CxError
from cxkernel.listen import Subscription
from directory.repo import CREDENTIALS_CHANNEL
from gateway import account_page
from gateway.account_page import AccountPage
from gateway.app import COMPONENT_FACTORIES, Endpoint, Services
from xmpp.features.register import PasswordChange, Refused

log = logging.getLogger("cxgw.accounts")


class AccountsWiring:
    name = "accounts"

    def __init__(self, s: Services) -> None:
        self.s = s
        self._sub: Subscription | None = None
        self.ended = 0  # sessions ended after password changes (for tests and metrics)
        s.bus.on("account/password/set", self._xmpp_password)
        s.metrics.gauge("password_change_sessions_ended", lambda: float(self.ended),
                        "sessions ended because their account's password changed")
        # Other parts (the web /account page) end their own sessions on the same news.
        self.handlers: list[Any] = []
        s.components["accounts"] = self
        page = AccountPage(s, self.end_sessions)
        s.http.route(account_page.PATH, page.handle, methods=("GET", "POST"),
                     max_body=account_page.MAX_FORM)

    async def _xmpp_password(self, ev: PasswordChange) -> object:
        try:
            await self.s.directory.set_password(ev.address, ev.password, keep=ev.keep)
        except CxError as exc:
            return Refused(getattr(exc, "public", None) or str(exc))
        return True

    # -- LISTEN -------------------------------------------------------------------------------

    def _notified(self, payload: str) -> None:
        try:
            data = json.loads(payload)
            address, keep = str(data["address"]), str(data.get("keep", ""))
        except (ValueError, KeyError, TypeError):
            log.warning("bad %s payload", CREDENTIALS_CHANNEL)
            return
        self.end_sessions(address, keep)

    def end_sessions(self, address: str, keep: str = "") -> int:
        """End `address`'s sessions in this process but `keep` ("xmpp:<full jid>",
        "web:<id>")."""
        n = 0
        xmpp = self.s.components.get("xmpp")
        if xmpp is not None and getattr(xmpp, "c2s", None) is not None:
            n += xmpp.end_sessions(address, keep[5:] if keep.startswith("xmpp:") else "")
        imap = self.s.components.get("imap")
        for conn in list(getattr(imap, "conns", ())):
            if getattr(conn.session, "user", None) == address:
                conn.close("Password changed; log in again")
                n += 1
        pop3 = self.s.components.get("pop3")
        if pop3 is not None:
            n += pop3.end_sessions(address)
        for handler in self.handlers:
            n += handler(address, keep)
        if n:
            log.info("password of %s changed: %d session(s) ended", address, n)
        self.ended += n
        return n

    async def start(self) -> list[Endpoint]:
        # A change missed while the LISTEN connection was down is not replayed: the
        # directory's credentials are checked at every login anyway.
        self._sub = await self.s.listen.subscribe(CREDENTIALS_CHANNEL, self._notified)
        return []

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.close()


def factory(s: Services) -> Any:
    return AccountsWiring(s)


COMPONENT_FACTORIES.append(factory)
