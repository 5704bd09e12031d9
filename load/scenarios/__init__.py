"""Scenario registry: add a module `load/scenarios/<name>.py` with `SCENARIO` and list it here."""

from __future__ import annotations

from load.scenarios import imap_sync, smtp_burst, smtp_circular
from load.scenarios.base import Scenario

SCENARIOS: dict[str, Scenario] = {
    s.name: s for s in (
        smtp_burst.SCENARIO,
        smtp_circular.SCENARIO,
        imap_sync.SCENARIO,
    )
}
"""name -> scenario; the CLI builds one subcommand per entry."""

PLANNED = ("imap-idle", "xmpp-login", "xmpp-chat", "doc-exchange", "workday")
"""Scenarios the layout is ready for but that are not written yet."""

__all__ = ["PLANNED", "SCENARIOS", "Scenario"]
