"""TLS over memory BIOs for one connection (server side).

The driver owns the TCP transport and runs TLS itself: it avoids asyncio's SSL protocol,
whose per-connection 256 KiB receive buffer would dwarf our session budget, and makes
STARTTLS (RFC 6120 §5.4.3.3) a plain switch: bytes after ``<proceed/>`` go through here.
"""

from __future__ import annotations

import ssl


class TLSClosed(Exception):
    """The peer sent close_notify."""


class TLSLayer:
    """Feed ciphertext with ``receive``; encrypt with ``encrypt``; send ``outgoing()``."""

    __slots__ = ("_in", "_out", "_obj", "handshaken")

    def __init__(self, context: ssl.SSLContext) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=True)
        self.handshaken = False

    def receive(self, data: bytes) -> bytes:
        """Ciphertext in, plaintext out (b"" while the handshake runs). Raises
        ssl.SSLError on a broken handshake or record, TLSClosed on close_notify."""
        self._in.write(data)
        obj = self._obj
        if not self.handshaken:
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                return b""
            self.handshaken = True
        chunks: list[bytes] = []
        while True:
            try:
                chunk = obj.read(16384)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                if chunks:
                    break
                raise TLSClosed() from None
            if not chunk:
                break
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def encrypt(self, data: bytes) -> bytes:
        self._obj.write(data)
        return self._out.read()

    def outgoing(self) -> bytes:
        """Handshake or alert bytes waiting to be sent."""
        return self._out.read()

    def close_notify(self) -> bytes:
        try:
            self._obj.unwrap()
        except (ssl.SSLError, ValueError):
            pass
        return self._out.read()
