"""Verb: user vacation (an out-of-office reply as a managed Sieve script)."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli.common import EXIT_OK, add_json, emit, with_services
from mailrelay.sieve import admin


def register_user(user: Any) -> None:
    """Add `user vacation` to the `user` verbs."""
    p = user.add_parser("vacation", help="switch a user's out-of-office reply on or off")
    p.add_argument("address")
    onoff = p.add_mutually_exclusive_group(required=True)
    onoff.add_argument("--on", action="store_true", help="answer mail while away")
    onoff.add_argument("--off", action="store_true", help="stop answering")
    p.add_argument("--text", help="the reply's text (default: a short standard text)")
    p.add_argument("--subject", help="the reply's subject (default: \"Auto: \" + the original's)")
    p.add_argument("--days", type=int, default=7,
                   help="answer each sender at most once in this many days (default 7)")
    p.add_argument("--force", action="store_true",
                   help="replace the user's own active Sieve script (restored by --off)")
    add_json(p)
    p.set_defaults(func=user_vacation)


@with_services
async def user_vacation(s: Any, a: argparse.Namespace) -> int:
    state = await admin.set_vacation(s.db.pool, a.address, bool(a.on), text=a.text,
                                     subject=a.subject, days=a.days, force=a.force,
                                     max_scripts=s.cfg.sieve.max_scripts,
                                     domain=s.directory.domain)
    if a.json:
        emit(a, state.as_dict())
    elif state.on:
        print(f"vacation on for {state.address} (one reply per sender per {state.days} days)"
              + (f"; script {state.replaced!r} deactivated until --off" if state.replaced else ""))
    else:
        print(f"vacation off for {state.address}"
              + (f"; script {state.replaced!r} active again" if state.replaced else ""))
    return EXIT_OK
