"""CLI plumbing shared by every verb: config, services, output, exit codes.

Exit codes (documented in the README):
  0 ok · 1 unexpected failure · 2 usage error · 3 not found · 4 conflict (duplicate, in use)
  5 invalid input · 6 database unavailable · 7 configuration error
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any

from cxkernel import config as config_mod
from cxkernel.errors import Conflict, CxError, Invalid, NotFound, Unavailable

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NOTFOUND, EXIT_CONFLICT, EXIT_INVALID = 0, 1, 2, 3, 4, 5
EXIT_UNAVAILABLE, EXIT_CONFIG = 6, 7


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, NotFound):
        return EXIT_NOTFOUND
    if isinstance(exc, Conflict):
        return EXIT_CONFLICT
    if isinstance(exc, Invalid):
        return EXIT_INVALID
    if isinstance(exc, Unavailable):
        return EXIT_UNAVAILABLE
    if isinstance(exc, config_mod.ConfigError):
        return EXIT_CONFIG
    return EXIT_FAIL


def load_config(args: argparse.Namespace) -> config_mod.Config:
    return config_mod.load(getattr(args, "config", None))


def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine on uvloop (asyncio's loop where uvloop is missing)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - non-POSIX
        return asyncio.run(coro)
    return uvloop.run(coro)


def with_services(fn: Callable[[Any, argparse.Namespace], Awaitable[int | None]]) -> Callable[[argparse.Namespace], int]:
    """Decorate a verb: load config, open services (small pool), call, close, map errors."""
    def verb(args: argparse.Namespace) -> int:
        async def main() -> int:
            from gateway.app import open_services
            cfg = load_config(args)
            services = await open_services(cfg, pool_max=4)
            try:
                return int(await fn(services, args) or 0)
            finally:
                await services.db.close()
        return guarded(lambda: run_async(main()))
    verb.__doc__ = fn.__doc__
    return verb


def guarded(call: Callable[[], int]) -> int:
    try:
        return call()
    except (CxError, config_mod.ConfigError) as exc:
        print(f"cxgw: {getattr(exc, 'public', None) or exc}", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        return 130


def emit(args: argparse.Namespace, rows: Sequence[dict[str, Any]] | dict[str, Any],
         columns: Iterable[str] | None = None) -> None:
    """Print rows as a table (humans) or JSON (`--json`: an array for lists)."""
    if getattr(args, "json", False):
        print(_json_safe(json.dumps(rows, ensure_ascii=False, indent=2, default=str)))
        return
    if isinstance(rows, dict):
        width = max((len(k) for k in rows), default=0)
        for k, v in rows.items():
            print(f"{k:<{width}}  {_cell(v)}")
        return
    cols = list(columns) if columns else (list(rows[0]) if rows else [])
    print_table(cols, [[_cell(r.get(c)) for c in cols] for r in rows])


def _cell(v: Any) -> str:
    """A value for a terminal: control characters of legacy data (ANSI escapes, CR/LF,
    NUL, bidi overrides) are shown escaped, never sent raw."""
    from directory.model import escape_controls
    if v is None:
        return "-"
    if isinstance(v, list | tuple):
        return escape_controls(",".join(str(x) for x in v))
    return escape_controls(str(v))


def _json_safe(text: str) -> str:
    """json.dumps escapes C0 controls but, with ensure_ascii=False, not C1 or bidi
    controls: escape those too (still valid JSON)."""
    from directory.model import is_control
    if not any(is_control(c) for c in text if c not in "\n"):
        return text
    return "".join(f"\\u{ord(c):04x}" if c != "\n" and is_control(c) else c for c in text)


def _width(s: str) -> int:
    """Display width: CJK characters take two columns in a terminal."""
    import unicodedata
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max([_width(c)] + [_width(r[i]) for r in rows]) for i, c in enumerate(columns)]
    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c + " " * (w - _width(c)) for c, w in zip(cells, widths, strict=True)).rstrip()
    print(fmt([c.upper() for c in columns]))
    for r in rows:
        print(fmt(r))


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON for scripts")


def read_password(args: argparse.Namespace) -> str | None:
    """Read a password from stdin (first line) when --password-stdin is given."""
    if not getattr(args, "password_stdin", False):
        return None
    line = sys.stdin.readline()
    pw = line.rstrip("\r\n")
    if not pw:
        raise Invalid("no password on standard input")
    return pw
