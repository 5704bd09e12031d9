"""A large APPEND literal kept in an anonymous temporary file instead of in memory.

The reader writes literal bytes here as they arrive (page-cache writes, no awaiting),
so a client uploading a 50 MB message slowly costs the server a file descriptor, not
50 MB of RAM. The file has no name (``tempfile.TemporaryFile``): it disappears when
closed or when the process dies.
"""

from __future__ import annotations

import tempfile
from typing import IO

__all__ = ["Spool"]


class Spool:
    """Literal data on disk: ``size`` bytes written so far; :meth:`read` returns them all."""

    __slots__ = ("_file", "size")

    def __init__(self, directory: str | None = None) -> None:
        self._file: IO[bytes] | None = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._file is None:
            raise ValueError("spool closed")
        self._file.write(data)
        self.size += len(data)

    def read(self) -> bytes:
        """All data (blocking file I/O: call it in an executor for big spools)."""
        if self._file is None:
            raise ValueError("spool closed")
        self._file.flush()
        self._file.seek(0)
        return self._file.read()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"<Spool {self.size} bytes>"
