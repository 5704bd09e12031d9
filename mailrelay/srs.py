"""Sender Rewriting Scheme (SRS0, as in libsrs2/postsrsd) for mail we forward to outside.

A redirected message keeps its original author, but its envelope sender becomes ours, so
the destination's SPF check (RFC 7208) sees our domain and passes, and a bounce comes back
to us: ``SRS0=HHHH=TT=orig.domain=orig-local@our.domain``. HHHH is a keyed HMAC-SHA1 of
the timestamp and the original address (base64, 4 characters), TT the day number modulo
1024 in base32 (2 characters). `reverse` accepts only our own, unexpired, correctly keyed
addresses, so the port-25 listener is not an open relay for forged SRS addresses.
Pure: no I/O; the time is an argument.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_PERIOD = 1024  # timestamp wraps every 1024 days
MAX_AGE_DAYS = 21  # postsrsd's default: bounces older than three weeks are refused
HASH_LEN = 4


class SRS:
    def __init__(self, secret: bytes, domain: str) -> None:
        if not secret:
            raise ValueError("SRS needs a secret")
        self.secret = secret
        self.domain = domain.lower()

    def _hash(self, stamp: str, domain: str, local: str) -> str:
        mac = hmac.new(self.secret, (stamp + domain + local).lower().encode("utf-8"),
                       hashlib.sha1).digest()
        return base64.b64encode(mac).decode()[:HASH_LEN]

    @staticmethod
    def _stamp(now: float) -> str:
        day = int(now // 86400) % _PERIOD
        return _B32[day >> 5] + _B32[day & 31]

    def forward(self, sender: str, now: float) -> str:
        """The envelope sender to use when forwarding mail from `sender` to outside.
        The null sender stays null; our own addresses need no rewriting."""
        if not sender or "@" not in sender:
            return sender
        local, _, domain = sender.rpartition("@")
        if domain.lower() == self.domain:
            return sender
        # An SRS address of another forwarder is wrapped whole (reverse splits at most three
        # '=' so the original local part, '=' and all, comes back unchanged).
        stamp = self._stamp(now)
        return f"SRS0={self._hash(stamp, domain, local)}={stamp}={domain}={local}@{self.domain}"

    def reverse(self, address: str, now: float) -> str | None:
        """The original sender behind one of our SRS0 addresses, or None when `address` is
        not one (wrong domain, bad hash, expired)."""
        local, _, domain = address.rpartition("@")
        if domain.lower() != self.domain or not local[:5].upper() == "SRS0=":
            return None
        parts = local[5:].split("=", 3)
        if len(parts) != 4:
            return None
        h, stamp, odomain, olocal = parts
        if len(stamp) != 2 or not odomain or not olocal:
            return None
        want = self._hash(stamp.upper(), odomain, olocal)
        # case-insensitive compare (some MTAs lowercase local parts), constant time
        if not hmac.compare_digest(h.lower().encode(), want.lower().encode()):
            return None
        try:
            then = (_B32.index(stamp[0].upper()) << 5) | _B32.index(stamp[1].upper())
        except ValueError:
            return None
        age = (int(now // 86400) - then) % _PERIOD
        if age > MAX_AGE_DAYS:
            return None
        return f"{olocal}@{odomain}"
