"""Test messages: unique `X-Load-Id` and `Message-ID`, bodies of exact size, built fast.

Bodies are generated once per size and shared; only the headers differ per message, so
building a message costs one small format and one concatenation. Body lines never start
with "." and are at most 76 characters, so no dot-stuffing is needed on the wire.
"""

from __future__ import annotations

import os
import time
from email.utils import formatdate

LOAD_ID_HEADER = "X-Load-Id"
_LINE = b"The quick brown fox jumps over the lazy dog; the circular reaches everyone. 0123\r\n"
_LINE = _LINE[:74] + b"\r\n"


def new_run_id() -> str:
    """A short id unique per run; every X-Load-Id of the run starts with it."""
    return "cxl" + time.strftime("%y%m%d%H%M%S") + os.urandom(3).hex()


def load_id(run_id: str, seq: int) -> str:
    return f"{run_id}-{seq:08d}"


class MessageFactory:
    """Builds wire-ready DATA payloads (ending with the terminating `.` line)."""

    def __init__(self, run_id: str, domain: str = "load.invalid") -> None:
        self.run_id = run_id
        self.domain = domain
        self._bodies: dict[int, bytes] = {}
        self._date = formatdate(localtime=False, usegmt=True)
        self._date_at = time.monotonic()

    def _body(self, size: int) -> bytes:
        body = self._bodies.get(size)
        if body is None:
            n = max(size, 0)
            reps = n // len(_LINE) + 1
            raw = (_LINE * reps)[:n]
            if raw and not raw.endswith(b"\r\n"):
                # end on a whole line; never leave a bare CR (RFC 5321 §2.3.8)
                raw = raw[:max(n - 2, 0)]
                if raw.endswith(b"\r"):
                    raw = raw[:-1] + b"x"
                raw += b"\r\n"
            body = self._bodies[size] = raw
        return body

    def _now(self) -> str:
        now = time.monotonic()
        if now - self._date_at >= 1.0:
            self._date = formatdate(localtime=False, usegmt=True)
            self._date_at = now
        return self._date

    def build(self, seq: int, mail_from: str, rcpts: list[str], size: int,
              subject: str = "load test") -> tuple[str, bytes]:
        """Return (X-Load-Id, DATA payload). `size` is the approximate total message size."""
        lid = load_id(self.run_id, seq)
        to = rcpts[0] if len(rcpts) == 1 else "undisclosed-recipients:;"
        headers = (f"From: <{mail_from}>\r\nTo: {to}\r\nSubject: {subject} {seq}\r\n"
                   f"Date: {self._now()}\r\nMessage-ID: <{lid}@{self.domain}>\r\n"
                   f"{LOAD_ID_HEADER}: {lid}\r\nMIME-Version: 1.0\r\n"
                   "Content-Type: text/plain; charset=us-ascii\r\n\r\n").encode("ascii")
        body = self._body(max(0, size - len(headers)))
        return lid, headers + body + b".\r\n"
