"""TLS over memory BIOs, owned by the connection (implicit TLS and STARTTLS alike).

asyncio's own SSL transport keeps a 256 KiB read buffer per connection; with many idle
IMAP clients that dominates memory. Here OpenSSL reads from and writes to small memory
BIOs and the plain TCP transport carries the records.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

__all__ = ["TlsLayer", "TlsFailed"]

_READ = 16384


class TlsFailed(Exception):
    """The handshake or a record failed; close the connection."""


class TlsLayer:
    """Feed ciphertext with :meth:`receive`; plaintext comes out; :meth:`send` encrypts."""

    __slots__ = ("_in", "_out", "_obj", "_write", "handshaken", "closed", "_pending")

    def __init__(self, ctx: ssl.SSLContext, write: Callable[[bytes], None]) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = ctx.wrap_bio(self._in, self._out, server_side=True)
        self._write = write
        self.handshaken = False
        self.closed = False
        self._pending: list[bytes] = []

    def _flush(self) -> None:
        if self._out.pending:
            self._write(self._out.read())

    def receive(self, data: bytes) -> bytes:
        """Ciphertext in, the plaintext it completes out (b"" if none yet)."""
        self._in.write(data)
        try:
            if not self.handshaken:
                try:
                    self._obj.do_handshake()
                except ssl.SSLWantReadError:
                    self._flush()
                    return b""
                self.handshaken = True
                for p in self._pending:
                    self._obj.write(p)
                self._pending.clear()
            chunks: list[bytes] = []
            while True:
                try:
                    chunk = self._obj.read(_READ)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:  # close_notify: treat as EOF
                    self.closed = True
                    break
                if not chunk:
                    self.closed = True
                    break
                chunks.append(chunk)
            self._flush()
            return b"".join(chunks)
        except ssl.SSLError as exc:
            self._flush()  # send the alert
            raise TlsFailed(str(exc)) from exc

    def send(self, data: bytes) -> None:
        if not data:
            return
        if not self.handshaken:
            self._pending.append(data)
            return
        try:
            self._obj.write(data)
        except ssl.SSLError as exc:
            raise TlsFailed(str(exc)) from exc
        self._flush()

    def close(self) -> None:
        """Send close_notify (best effort)."""
        if self.handshaken:
            try:
                self._obj.unwrap()
            except (ssl.SSLError, ValueError):
                pass
            self._flush()
