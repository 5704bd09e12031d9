"""What a scenario receives: the parsed common knobs, a recorder, and a place for its params."""

from __future__ import annotations

import argparse
import random
import ssl
from dataclasses import dataclass, field
from typing import Any

from load.message import new_run_id
from load.options import (
    Credential,
    Limits,
    SizeDist,
    Target,
    client_ssl_context,
    limits_from_args,
    load_credentials,
    sizes_from_args,
    target_from_args,
)
from load.stats import Recorder


@dataclass
class RunContext:
    """Everything common to a run; scenarios add their own settings to `params`."""

    scenario: str
    target: Target
    limits: Limits
    sizes: SizeDist
    rng: random.Random
    ssl_ctx: ssl.SSLContext | None
    implicit_tls: bool
    starttls: bool
    timeout: float
    credentials: list[Credential]
    run_id: str = field(default_factory=new_run_id)
    rec: Recorder = field(default_factory=Recorder)
    params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # scenario-specific result fields
    completed: bool = True
    # a composite run's parts by label (workday: mail, imap, ...), for the live display
    live_parts: dict[str, list[Recorder]] = field(default_factory=dict)
    _passwords: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_args(cls, scenario: str, args: argparse.Namespace) -> RunContext:
        """Validate the common knobs (raises OptionError with a message for the user)."""
        target = target_from_args(args)
        limits = limits_from_args(args)
        sizes = sizes_from_args(args)
        tls = bool(args.tls or args.starttls)
        creds = load_credentials(args.credentials) if args.credentials else []
        ctx = cls(scenario=scenario, target=target, limits=limits, sizes=sizes,
                  rng=random.Random(args.seed), timeout=float(args.timeout),
                  ssl_ctx=client_ssl_context(args.insecure, args.cafile) if tls else None,
                  implicit_tls=bool(args.tls), starttls=bool(args.starttls), credentials=creds)
        ctx.params.update({
            "connections": limits.connections, "count": limits.count,
            "duration": limits.duration, "max_duration": limits.max_duration,
            "rate": limits.rate, "size": sizes.describe(),
            "tls": "implicit" if args.tls else "starttls" if args.starttls else "none",
            "timeout": ctx.timeout, "seed": args.seed,
            "credentials": f"{len(creds)} accounts" if creds else None,
        })
        return ctx

    def password_for(self, address: str) -> str | None:
        if len(self._passwords) != len(self.credentials):
            self._passwords = {c.address: c.password for c in self.credentials}
        return self._passwords.get(address.lower())
