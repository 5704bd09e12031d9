"""TLS over memory BIOs for one connection (server side).

The driver owns the TCP transport and runs TLS itself: it avoids asyncio's SSL protocol,
whose per-connection 256 KiB receive buffer would dwarf our session budget, and makes
STARTTLS (RFC 6120 §5.4.3.3) a plain switch: bytes after ``<proceed/>`` go through here.

OpenSSL's memory BIOs never shrink: one 60 KB burst (a big roster, a MAM page, an avatar)
would stay allocated for the life of the session. So bytes pass through them in pieces
of at most ``PIECE``, each drained before the next, which bounds what an idle session
keeps to a few KiB (and costs a few µs per 64 KiB).
"""

from __future__ import annotations

import ssl

PIECE = 4096  # bytes written to a memory BIO at a time (ciphertext in, plaintext out)


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
        if len(data) <= PIECE:
            return self._receive(data)
        view = memoryview(data)
        plain: list[bytes] = []
        for i in range(0, len(data), PIECE):
            try:
                plain.append(self._receive(view[i:i + PIECE]))
            except TLSClosed:
                if any(plain):
                    break  # the next receive (or EOF) reports the close
                raise
        return b"".join(plain)

    def _receive(self, data: bytes | memoryview) -> bytes:
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
                chunk = b""
            if not chunk:  # close_notify: SSLObject.read returns b"" for it
                if chunks:
                    break  # the next receive reports it
                raise TLSClosed()
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def encrypt(self, data: bytes) -> bytes:
        obj, out = self._obj, self._out
        if len(data) <= PIECE:
            obj.write(data)
            return out.read()
        view = memoryview(data)
        records: list[bytes] = []
        for i in range(0, len(data), PIECE):
            obj.write(view[i:i + PIECE])
            records.append(out.read())
        return b"".join(records)

    def outgoing(self) -> bytes:
        """Handshake or alert bytes waiting to be sent."""
        return self._out.read()

    def close_notify(self) -> bytes:
        try:
            self._obj.unwrap()
        except (ssl.SSLError, ValueError):
            pass
        return self._out.read()
