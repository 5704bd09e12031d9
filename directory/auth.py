"""The one authentication service of SMTP, IMAP and XMPP: password checks, SCRAM keys,
lockout and the per-network penalty.

* Unknown names get fake SCRAM keys: HMAC of the name with a server secret kept in the
  database (stable across restarts and nodes), at the configured iteration count. A
  prober sees a stable salt per name and the same steps, work and database writes as for
  a real user; disabled and locked users end the same way.
* Lockout: ``repo.count_attempt`` counts an attempt for the NAME and says whether the
  password may be checked, in one statement, before the check: parallel attempts cannot
  get more than ``auth.lockout_failures`` checks per ``auth.lockout_seconds`` window.
  The window starts with the first attempt and ends on its own (a victim is locked out
  for at most one window); a success clears it.
* Penalty (Dovecot's auth penalty): failures from one network (IPv4 address, IPv6 /64)
  delay that network's next attempts, 2^(n-free) seconds up to ``auth.penalty_max_seconds``;
  a success from there clears it. Spraying many names is slowed; nobody else waits.
* PBKDF2 runs in an executor, never on the event loop. A success is cached for
  ``auth.cache_seconds`` (Dovecot's auth cache).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import os
import time
from dataclasses import dataclass

import asyncpg

from cxkernel.metrics import Metrics
from directory import repo
from directory.model import Account
from directory.sasl import ChannelBinding, CheckPassword, CheckProof, NeedKeys, SaslServer, Step
from directory.scram import HASHES, ScramKeys, check_password
from directory.service import DirectorySettings

log = logging.getLogger("cxgw.auth")

FAKE_KEY_SECRET = "fake-scram-keys"


#: how long an attempt over the count waits for the name's in-flight checks (60 x 50 ms)
INFLIGHT_POLLS = 60
INFLIGHT_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class AuthResult:
    ok: bool
    account: Account | None = None
    reason: str = "ok"  # ok | bad-credentials | locked | disabled | no-credentials | unavailable


def network_of(remote: str) -> str:
    """The penalty key of a client address: the IPv4 address or the IPv6 /64 ("" if none)."""
    host = remote
    if host.startswith("[") and "]" in host:
        host = host[1:host.index("]")]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:  # "a.b.c.d:port"
            ip = ipaddress.ip_address(host.rpartition(":")[0])
        except ValueError:
            return ""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def penalty_delay(failures: int, age: float, *, free: int, max_seconds: float,
                  window: float) -> float:
    """Seconds to wait before an attempt from a network with `failures` recent failures,
    the last `age` seconds ago (Dovecot: doubling, capped)."""
    if max_seconds <= 0 or failures < free or age > window:
        return 0.0
    return float(min(max_seconds, 2 ** min(failures - free, 16)))


class Authenticator:
    def __init__(self, pool: asyncpg.Pool, settings: DirectorySettings,
                 metrics: Metrics | None = None) -> None:
        self.pool = pool
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._secret: bytes | None = None
        self._secret_lock = asyncio.Lock()
        self._cache: dict[bytes, float] = {}
        self._cache_secret = os.urandom(32)
        self._next_expiry = 0.0
        #: tls-server-end-point of our certificate: enables SCRAM-*-PLUS over TLS
        self.channel_binding: ChannelBinding | None = None
        #: password checks running now in this process, per login name
        self._inflight: dict[str, int] = {}

    # -- a cache of recent successful verifications ------------------------------------------
    # Mail clients log in again and again (each IMAP sync, each submission); PBKDF2 costs
    # milliseconds of CPU per login. A success is remembered for `auth.cache_seconds`, keyed
    # by an HMAC (per-process secret) of the stored key and the password: a changed
    # password changes the stored key, so the entry no longer matches. Failures are never
    # cached, and the account's status and lockout are still checked on every login.
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

    # -- fake keys for unknown names ----------------------------------------------------------

    async def _server_secret(self) -> bytes:
        if self._secret is None:
            async with self._secret_lock:
                if self._secret is None:
                    async with self.pool.acquire() as conn:
                        self._secret = await repo.server_secret(conn, FAKE_KEY_SECRET,
                                                                os.urandom(32))
        return self._secret

    async def fake_keys(self, address: str, mechanism: str) -> ScramKeys:
        """Keys no password matches, the same for a name on every node and after restarts
        (RFC 5802 §5.1: a salt per unknown user, so they look like known ones)."""
        secret = await self._server_secret()
        name = HASHES[mechanism]

        def part(label: bytes, size: int) -> bytes:
            return hmac.new(secret, label + b"\0" + mechanism.encode() + b"\0" +
                            address.encode("utf-8", "surrogatepass"), "sha256").digest()[:size]
        size = hashlib.new(name).digest_size
        return ScramKeys(mechanism, part(b"salt", 16), self.settings.scram_iterations,
                         part(b"stored", size), part(b"server", size))

    def username_to_address(self, username: str) -> str:
        name = username.strip().lower()
        return name if "@" in name else f"{name}@{self.settings.domain}"

    # -- lockout and penalty --------------------------------------------------------------

    async def _count(self, address: str, network: str) -> bool:
        """Count the attempt, wait out the network's penalty; whether to check at all.

        An attempt is "in flight" (`_inflight`) from its count until its check's outcome
        is recorded (`_checked`). One over the count waits while others are in flight here
        (a mail client opening five connections at once): if one of them succeeds, the
        counter is gone and this attempt counts afresh; otherwise it is refused. Checks per
        window stay bounded by `lockout_failures`: only a success empties the counter."""
        s = self.settings
        polls = INFLIGHT_POLLS
        first = True
        while True:
            self._checking(address)
            try:
                attempts, failures, age = await self._count_once(address, network)
            except BaseException:
                self._checked(address)
                raise
            if first:
                first = False
                delay = penalty_delay(failures, age, free=s.penalty_free_failures,
                                      max_seconds=s.penalty_max_seconds,
                                      window=s.penalty_window)
                if delay > 0:
                    self.metrics.inc("auth_throttled_total")
                    self.metrics.inc("auth_throttle_seconds_total", delay)
                    await asyncio.sleep(delay)
            if attempts <= s.lockout_failures:
                return True  # in flight until _checked after the outcome
            self._checked(address)  # a waiter is not in flight
            while True:
                if not self._inflight.get(address):
                    async with self.pool.acquire() as conn:
                        over = await repo.current_attempts(conn, address, s.lockout_seconds)
                    if not over:
                        break  # a success emptied the counter: count afresh
                    if not self._inflight.get(address):
                        return False  # they failed: still over the count
                if polls <= 0:
                    return False  # waited long enough
                await asyncio.sleep(INFLIGHT_POLL_SECONDS)
                polls -= 1

    async def _count_once(self, address: str, network: str) -> tuple[int, int, float]:
        s = self.settings
        async with self.pool.acquire() as conn:
            now = time.monotonic()
            if now >= self._next_expiry:
                self._next_expiry = now + 60
                await repo.expire_auth_counters(conn, s.lockout_seconds, s.penalty_window)
            return await repo.count_attempt(conn, address, s.lockout_seconds, network,
                                            s.lockout_failures)

    def _checking(self, address: str) -> None:
        self._inflight[address] = self._inflight.get(address, 0) + 1

    def _checked(self, address: str) -> None:
        n = self._inflight.get(address, 0) - 1
        if n > 0:
            self._inflight[address] = n
        else:
            self._inflight.pop(address, None)

    async def _outcome(self, address: str, network: str, ok: bool,
                       account: Account | None) -> None:
        async with self.pool.acquire() as conn:
            await repo.record_outcome(conn, address, network, ok, self.settings.penalty_window,
                                      account.id if ok and account is not None else None)

    def _log(self, ok: bool, reason: str, protocol: str, remote: str, address: str,
             mechanism: str) -> None:
        self.metrics.inc("auth_attempts_total", result="ok" if ok else reason)
        log.info("auth %s protocol=%s mechanism=%s remote=%s user=%s%s",
                 "ok" if ok else "fail", protocol, mechanism, remote, address,
                 "" if ok else f" reason={reason}")

    @staticmethod
    def _usable(found: tuple[Account, ScramKeys | None] | None) -> str:
        if found is None:
            return "bad-credentials"  # unknown: said like a wrong password
        if not found[0].active:
            return "disabled"
        if found[1] is None:
            return "no-credentials"
        return "ok"

    # -- PLAIN, LOGIN, IMAP LOGIN -----------------------------------------------------------

    async def authenticate(self, username: str, password: str, *, protocol: str = "",
                           remote: str = "", mechanism: str = "PLAIN") -> AuthResult:
        """Verify a username/password pair, counting toward the lockout and penalty."""
        address = self.username_to_address(username)
        network = network_of(remote)
        # one round trip: the login row and the name's current count (a cached success
        # needs both; an uncached attempt is counted afresh by `_count` below)
        async with self.pool.acquire() as conn:
            found, attempts = await repo.get_login_attempts(
                conn, address, "SCRAM-SHA-256", self.settings.lockout_seconds)
        usable = self._usable(found)
        keys = found[1] if found is not None and found[1] is not None else \
            await self.fake_keys(address, "SCRAM-SHA-256")
        tag = self._cache_tag(keys, password) if usable == "ok" else None
        if tag is not None and self._cached(tag):
            # Verified recently against these very keys: no PBKDF2, but the lockout holds.
            assert found is not None
            if attempts < self.settings.lockout_failures:
                if attempts:
                    async with self.pool.acquire() as conn:
                        await repo.clear_attempts(conn, address)
                self._log(True, "ok", protocol, remote, address, mechanism)
                return AuthResult(True, found[0], "ok")
        allowed = await self._count(address, network)
        ok = False
        if allowed:
            self.metrics.inc("auth_password_checks_total")
            loop = asyncio.get_running_loop()
            ok = await loop.run_in_executor(None, check_password, keys, password)
        res = await self._finish(address, network, allowed, ok, usable, found, protocol,
                                 remote, mechanism)
        if res.ok and tag is not None:
            self._remember(tag)
        return res

    async def _finish(self, address: str, network: str, allowed: bool, ok: bool,
                      usable: str, found: tuple[Account, ScramKeys | None] | None,
                      protocol: str, remote: str,
                      mechanism: str) -> AuthResult:
        """After a counted check (password or SCRAM proof, `ok`): record the outcome,
        release the name's waiters, log once; the one ending of both paths."""
        success = ok and usable == "ok"
        account = found[0] if found is not None else None
        try:
            await self._outcome(address, network, success, account)
        finally:
            if allowed:  # after the outcome: waiters then see the counter it left
                self._checked(address)
        reason = "ok" if success else ("locked" if not allowed else
                                       ("bad-credentials" if not ok else usable))
        self._log(success, reason, protocol, remote, address, mechanism)
        return AuthResult(success, account, reason)

    # -- the SASL exchange ----------------------------------------------------------------

    async def advance(self, server: SaslServer, step: Step, *, protocol: str = "",
                      remote: str = "") -> Step:
        """Do the directory's part of an exchange until it needs the client again (a
        Challenge) or is over. A database failure ends it with ``temporary``."""
        while isinstance(step, CheckPassword | NeedKeys | CheckProof):
            try:
                step = await self._answer(server, step, protocol, remote)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    TimeoutError) as exc:
                log.warning("auth unavailable protocol=%s remote=%s: %r", protocol, remote, exc)
                self.metrics.inc("auth_attempts_total", result="unavailable")
                return server.fail("temporary")
        return step

    async def _answer(self, server: SaslServer, step: CheckPassword | NeedKeys | CheckProof,
                      protocol: str, remote: str) -> Step:
        if isinstance(step, CheckPassword):
            res = await self.authenticate(step.username, step.password, protocol=protocol,
                                          remote=remote, mechanism=server.mechanism)
            server.account = res.account if res.ok else None
            return server.verdict(res.ok)
        if isinstance(step, NeedKeys):
            address = self.username_to_address(step.username)
            async with self.pool.acquire() as conn:
                found = await repo.get_login(conn, address, step.mechanism)
            server.lookup = (address, found)
            keys = found[1] if found is not None and found[1] is not None else \
                await self.fake_keys(address, step.mechanism)
            return server.keys(keys)
        # CheckProof: count, then verify (pure) only if the lockout allows.
        address, found = server.lookup  # type: ignore[misc]
        network = network_of(remote)
        allowed = await self._count(address, network)
        proof_ok = False
        if allowed:
            self.metrics.inc("auth_password_checks_total")
            proof_ok = server.check_proof()
        res = await self._finish(address, network, allowed, proof_ok, self._usable(found),
                                 found, protocol, remote, server.mechanism)
        server.account = res.account if res.ok else None
        return server.proof_result(res.ok)
