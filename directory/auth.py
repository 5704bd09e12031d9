"""The one `authenticate()` that SMTP, IMAP and XMPP share, with lockout.

PLAIN/LOGIN passwords are checked against the stored SCRAM-SHA-256 keys (PBKDF2 runs in an
executor, never on the event loop). SCRAM mechanisms fetch the keys with `scram_keys()` and
report the outcome with `record()`. Failed logins in a row lock the account for a while,
whichever protocol they came from. Unknown users cost the same work as known ones.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from directory import repo
from directory.model import Account
from directory.scram import ScramKeys, check_password, derive_keys
from directory.service import DirectorySettings

log = logging.getLogger("cxgw.auth")

_DUMMY = derive_keys("SCRAM-SHA-256", "dummy password for timing", b"0" * 16, 4096)


@dataclass(frozen=True)
class AuthResult:
    ok: bool
    account: Account | None = None
    reason: str = "ok"  # ok | bad-credentials | locked | disabled | no-credentials


class Authenticator:
    def __init__(self, pool: asyncpg.Pool, settings: DirectorySettings) -> None:
        self.pool = pool
        self.settings = settings
        self._dummies: dict[str, ScramKeys] = {}
        self._dummy_salt = os.urandom(16)
        self._cache: dict[bytes, float] = {}
        self._cache_secret = os.urandom(32)

    # -- a cache of recent successful verifications ------------------------------------------
    # Mail clients log in again and again (each IMAP sync, each submission); PBKDF2 costs
    # milliseconds of CPU per login. A success is remembered for `auth.cache_seconds`, keyed
    # by an HMAC (per-process secret) of the stored key and the password: a changed
    # password changes the stored key, so the entry no longer matches. Failures are never
    # cached (they must count toward the lockout), and the account's status is still
    # checked on every login.
    def _cache_tag(self, keys: ScramKeys, password: str) -> bytes | None:
        if self.settings.auth_cache_seconds <= 0:
            return None
        return hmac.new(self._cache_secret, keys.stored_key + b"\0" + password.encode(
            "utf-8", "surrogatepass"), "sha256").digest()

    def _cached(self, tag: bytes) -> bool:
        expires = self._cache.get(tag)
        if expires is None:
            return False
        if expires < time.monotonic():
            del self._cache[tag]
            return False
        return True

    def _remember(self, tag: bytes) -> None:
        if len(self._cache) >= 20000:  # bounded: drop the oldest entries
            for old in list(self._cache)[:1000]:
                del self._cache[old]
        self._cache[tag] = time.monotonic() + self.settings.auth_cache_seconds

    def _dummy_keys(self, mechanism: str) -> ScramKeys:
        """Keys no password matches, derived once per mechanism (PBKDF2 is slow: never
        on the event loop per attempt). The salt is fixed per process, so a prober learns
        nothing beyond 'this name answers like every unknown name'."""
        keys = self._dummies.get(mechanism)
        if keys is None:
            keys = derive_keys(mechanism, os.urandom(16).hex(), self._dummy_salt,
                               self.settings.scram_iterations)
            self._dummies[mechanism] = keys
        return keys

    def username_to_address(self, username: str) -> str:
        name = username.strip().lower()
        return name if "@" in name else f"{name}@{self.settings.domain}"

    async def authenticate(self, username: str, password: str, *, protocol: str = "",
                           remote: str = "") -> AuthResult:
        """Verify a username/password pair (PLAIN, LOGIN, IMAP LOGIN)."""
        address = self.username_to_address(username)
        async with self.pool.acquire() as conn:
            found = await repo.get_login(conn, address, "SCRAM-SHA-256")
        keys = found[1] if found else None
        tag = self._cache_tag(keys, password) if keys is not None else None
        if tag is not None and self._cached(tag):
            ok = True  # verified recently against these very keys (Dovecot's auth cache)
        else:
            loop = asyncio.get_running_loop()
            ok = await loop.run_in_executor(None, check_password, keys or _DUMMY, password)
            if ok and tag is not None:
                self._remember(tag)
        if found is None:
            log.info("auth fail protocol=%s remote=%s user=%s reason=unknown-user",
                     protocol, remote, address)
            return AuthResult(False, None, "bad-credentials")
        account = found[0]
        verdict = self._gate(account)
        if verdict is not None:
            log.info("auth fail protocol=%s remote=%s user=%s reason=%s", protocol, remote,
                     address, verdict)
            return AuthResult(False, account, verdict)
        ok = ok and keys is not None
        await self.record(account, ok)
        log.info("auth %s protocol=%s remote=%s user=%s", "ok" if ok else "fail", protocol,
                 remote, address)
        return AuthResult(ok, account, "ok" if ok else "bad-credentials")

    def _gate(self, account: Account) -> str | None:
        if not account.active:
            return "disabled"
        if account.locked_until and account.locked_until > datetime.now(UTC):
            return "locked"
        return None

    async def scram_keys(self, username: str, mechanism: str) -> tuple[Account | None, ScramKeys]:
        """Keys for a SCRAM exchange. For unknown, disabled or locked users, returns dummy
        keys (the exchange then fails at the proof, revealing nothing) and account None."""
        address = self.username_to_address(username)
        async with self.pool.acquire() as conn:
            found = await repo.get_login(conn, address, mechanism)
        if found is None or found[1] is None or self._gate(found[0]) is not None:
            fake = self._dummy_keys(mechanism)
            if found is not None:
                log.info("scram refused user=%s reason=%s", address,
                         self._gate(found[0]) or "no-credentials")
            return None, fake
        return found[0], found[1]

    async def record(self, account: Account, ok: bool) -> None:
        """Count a login attempt toward (or reset) the lockout."""
        async with self.pool.acquire() as conn:
            await repo.record_login(conn, account.id, ok, self.settings.lockout_failures,
                                    self.settings.lockout_seconds)
