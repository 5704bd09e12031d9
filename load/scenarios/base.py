"""The scenario contract: one module per scenario exposes `SCENARIO = Scenario(...)`."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from load.context import RunContext


@dataclass(frozen=True)
class Scenario:
    """A named load shape.

    `add_arguments` adds the scenario's own options (the common knobs are added for it);
    `run` drives the load and records into `ctx.rec`, adding its settings to `ctx.params`.
    """

    name: str
    help: str
    default_port: int
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[RunContext, argparse.Namespace], Awaitable[None]]
    tls_port: int | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
