"""A progress bar for long CLI operations (rich on a terminal, silent otherwise)."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any


class Progress:
    def __init__(self, title: str) -> None:
        self.title = title
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> Progress:
        if sys.stderr.isatty():
            try:  # rich comes with the `.[load]` extra; without it, no bar
                from rich.console import Console
                from rich.progress import Progress as RichProgress
            except ModuleNotFoundError:
                return self
            self._bar = RichProgress(console=Console(stderr=True), transient=True)
            self._bar.start()
        return self

    def update(self, stage: str, done: int, total: int) -> None:
        if self._bar is None:
            return
        if stage not in self._tasks:
            self._tasks[stage] = self._bar.add_task(f"{self.title}: {stage}", total=total)
        self._bar.update(self._tasks[stage], completed=done, total=total)

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
