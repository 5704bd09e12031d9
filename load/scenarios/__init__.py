"""Scenario registry: add a module `load/scenarios/<name>.py` with `SCENARIO` and list it here."""

from __future__ import annotations

from load.scenarios import (
    doc_exchange,
    imap_idle,
    imap_sync,
    smtp_burst,
    smtp_circular,
    workday,
    xmpp_chat,
    xmpp_login,
)
from load.scenarios.base import Scenario

SCENARIOS: dict[str, Scenario] = {
    s.name: s for s in (
        smtp_burst.SCENARIO,
        smtp_circular.SCENARIO,
        imap_sync.SCENARIO,
        imap_idle.SCENARIO,
        xmpp_login.SCENARIO,
        xmpp_chat.SCENARIO,
        doc_exchange.SCENARIO,
        workday.SCENARIO,
    )
}
"""name -> scenario; the CLI builds one subcommand per entry."""

PLANNED: tuple[str, ...] = ()
"""Scenarios the layout is ready for but that are not written yet."""

__all__ = ["PLANNED", "SCENARIOS", "Scenario"]
