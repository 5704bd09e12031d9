"""Network helpers shared by the tests."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback TCP port free right now (for configs that must name their ports)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
