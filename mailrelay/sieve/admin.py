"""Admin service for out-of-office replies: a managed Sieve script (``cx-vacation``) that
the CLI (`cxgw user vacation`) writes and activates for a user, without touching SQL.

A user who already runs a script of their own keeps it unless the admin forces the
vacation script; the replaced script's name is remembered in the managed script so that
switching the vacation off activates it again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import asyncpg

from cxkernel.errors import Conflict, Invalid, NotFound

from . import repo
from .script import compile_script

MANAGED = "cx-vacation"
MAX_DAYS = 365
DEFAULT_TEXT = "I am out of the office and will answer your message when I return."
_PREVIOUS = re.compile(r"^# previous: (.+)$", re.M)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class VacationState:
    address: str
    on: bool
    days: int | None = None
    subject: str | None = None
    replaced: str | None = None  # the user's own script deactivated (--force) or restored

    def as_dict(self) -> dict[str, object]:
        return {"address": self.address, "vacation": "on" if self.on else "off",
                "days": self.days, "subject": self.subject, "script": MANAGED,
                "replaced": self.replaced}


def _quote(text: str) -> str:
    """A Sieve quoted string (RFC 5228 §2.4.2): backslash and double quote escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def vacation_script(text: str, subject: str | None, days: int, previous: str | None) -> str:
    """The managed script: answer everything (vacation's own rules decide who gets one)."""
    head = f"# {MANAGED}: written by `cxgw user vacation`; edits are overwritten\r\n"
    if previous:
        head += f"# previous: {previous}\r\n"
    tags = f":days {days}" + (f" :subject {_quote(subject)}" if subject else "")
    body = text.replace("\r\n", "\n").replace("\n", "\r\n")
    return head + 'require "vacation";\r\n' + f"vacation {tags} {_quote(body)};\r\n"


def _check(text: str, subject: str | None, days: int) -> None:
    if not 1 <= days <= MAX_DAYS:  # RFC 5230 §4.1: at least one day
        raise Invalid(f"--days must be between 1 and {MAX_DAYS}")
    if _CONTROL.search(text):
        raise Invalid("--text contains control characters")
    if subject is not None and (_CONTROL.search(subject) or "\n" in subject or "\r" in subject):
        raise Invalid("--subject must be one line without control characters")
    if len(text.encode()) > 16384:
        raise Invalid("--text is longer than 16 KiB")


async def set_vacation(pool: asyncpg.Pool, address: str, on: bool, *, text: str | None = None,
                       subject: str | None = None, days: int = 7, force: bool = False,
                       max_scripts: int = 20, domain: str = "") -> VacationState:
    """Switch the out-of-office reply of `address` (a bare name gets `domain`) on or off."""
    address = address.strip().lower()
    if "@" not in address and domain:
        address = f"{address}@{domain.lower()}"
    if not await repo.account_exists(pool, address):
        raise NotFound(f"no account {address}")
    scripts = await repo.list_scripts(pool, address)
    active = next((s.name for s in scripts if s.active), None)
    if not on:
        if active != MANAGED:
            return VacationState(address, False)
        source = await repo.get_script(pool, address, MANAGED) or ""
        m = _PREVIOUS.search(source)
        previous = m.group(1).strip() if m else None
        if previous and any(s.name == previous for s in scripts):
            await repo.set_active(pool, address, previous)
        else:
            previous = None
            await repo.set_active(pool, address, "")
        return VacationState(address, False, replaced=previous)
    text = text if text is not None else DEFAULT_TEXT
    _check(text, subject, days)
    previous = None
    if active and active != MANAGED:
        if not force:
            raise Conflict(f"{address} has an active Sieve script of their own ({active!r});"
                           " use --force to replace it while the vacation lasts")
        previous = active
    elif active == MANAGED:  # already on: keep remembering what it replaced
        m = _PREVIOUS.search(await repo.get_script(pool, address, MANAGED) or "")
        previous = m.group(1).strip() if m else None
    source = vacation_script(text, subject, days, previous)
    compile_script(source)  # what we store must run
    await repo.put_script(pool, address, MANAGED, source, max_scripts)
    await repo.set_active(pool, address, MANAGED)
    return VacationState(address, True, days, subject, previous)
