"""The asyncio driver: POP3 listeners (``pop3`` with STLS, ``pop3s`` implicit TLS).

Each connection joins a socket to a :class:`~mailrelay.pop3.proto.Pop3Core` and runs the
requests it yields against the mail store: the INBOX snapshot taken at login
(:mod:`mailrelay.pop3.repo`), message bytes on RETR/TOP, and at QUIT the deletions as one
IMAP expunge of exactly the marked UIDs (RFC 1939 §6: only in the UPDATE state; a dropped
connection deletes nothing). Retrieved messages get ``\\Seen`` at QUIT, as Dovecot does.

Authentication goes through the directory's authenticator (the same lockout and cache as
SMTP and IMAP); USER/PASS and AUTH need TLS (RFC 2595). Timeouts: a session that has not
logged in within ``unauth_timeout`` seconds of connecting is closed whatever it sends (a
trickle cannot extend it); a logged-in session idle for ``idle_timeout`` (RFC 1939 §3:
at least 10 minutes) is closed without entering UPDATE.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from cxkernel.limiter import ConnectionLimiter, peer_ip

from . import repo
from .proto import (
    NEED_DATA,
    Closed,
    Maildrop,
    Pop3Core,
    Pop3Error,
    Request,
    SaslData,
    State,
    top_of,
)

__all__ = ["Pop3Config", "Pop3Server"]

log = logging.getLogger("cxgw.pop3")

CAPABILITIES = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING",
                "EXPIRE NEVER", "IMPLEMENTATION cx-gateway"]
MECHANISMS = ["PLAIN"]


class ExpungeStore(Protocol):
    """The IMAP store's two calls POP3 needs for UPDATE."""

    async def store_flags(self, mailbox_id: int, uids: list[int], mode: str,
                          flags: list[str]) -> Any: ...

    async def expunge(self, mailbox_id: int, uids: list[int] | None = None) -> list[int]: ...


@dataclass(frozen=True)
class Pop3Config:
    idle_timeout: float = 600.0  # RFC 1939 §3: the autologout timer is at least 10 minutes
    unauth_timeout: float = 60.0


class Pop3Server:
    def __init__(self, pool: asyncpg.Pool, store: ExpungeStore, auth: Any,
                 tls: ssl.SSLContext, cfg: Pop3Config,
                 limiters: dict[str, ConnectionLimiter] | None = None) -> None:
        self.pool, self.store, self.auth, self.tls, self.cfg = pool, store, auth, tls, cfg
        self.limiters = limiters or {}  # "pop3"/"pop3s" -> caps (cxkernel.limiter)
        self._servers: list[asyncio.Server] = []
        self._sessions: set[asyncio.Task[None]] = set()

    async def listen(self, host: str, port: int, implicit_tls: bool) -> int:
        limiter = self.limiters.get("pop3s" if implicit_tls else "pop3")

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            ticket = limiter.admit(peer_ip(w.transport)) if limiter is not None else None
            if limiter is not None and ticket is None:  # over a cap: one line, then close
                w.write(b"-ERR [SYS/TEMP] Too many connections, try later\r\n")
                w.close()
                return
            task = asyncio.current_task()
            assert task is not None
            self._sessions.add(task)
            try:
                await Pop3Session(self, r, w, implicit_tls).run()
            finally:
                self._sessions.discard(task)
                if ticket is not None:
                    ticket.release()

        srv = await asyncio.start_server(handle, host, port,
                                         ssl=self.tls if implicit_tls else None,
                                         ssl_handshake_timeout=30 if implicit_tls else None)
        self._servers.append(srv)
        return int(srv.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for srv in self._servers:
            srv.close()
        for task in list(self._sessions):
            task.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)
        for srv in self._servers:
            await srv.wait_closed()
        self._servers.clear()


class Pop3Session:
    """One connection: reads lines into the core and answers its requests."""

    def __init__(self, srv: Pop3Server, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, implicit_tls: bool) -> None:
        self.srv, self.reader, self.writer = srv, reader, writer
        self.core = Pop3Core(tls=implicit_tls, tls_available=True)
        peer = writer.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else ""
        self.address: str | None = None
        self.drop: Maildrop | None = None
        self.mailbox_id = 0
        self.deadline = time.monotonic() + srv.cfg.unauth_timeout

    async def run(self) -> None:
        try:
            self.core.greeting()
            await self._flush()
            while True:
                if not await self._pump():
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            log.info("pop3 connection from %s ended: %s", self.remote, exc.__class__.__name__)
        except TimeoutError:
            log.info("pop3 connection from %s timed out", self.remote)
            self.core.err("[SYS/TEMP] Autologout; idle too long")
            await self._flush(quiet=True)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("pop3 session of %s failed: %s", self.address or self.remote, exc)
            self.core.err("[SYS/TEMP] Temporary server failure, try again later")
            await self._flush(quiet=True)
        finally:
            self.writer.close()

    async def _pump(self) -> bool:
        """Run every complete request; read more; False once the connection must end."""
        while (ev := self.core.next_event()) is not NEED_DATA:
            if isinstance(ev, Closed):
                await self._flush()
                return False
            if isinstance(ev, Request):
                await self._request(ev)
            elif isinstance(ev, SaslData):
                await self._sasl_response(ev.line)
            await self._flush()
        await self._flush()  # errors the core answered by itself
        if self.drop is None:
            timeout = self.deadline - time.monotonic()
            if timeout <= 0:
                raise TimeoutError
        else:
            timeout = self.srv.cfg.idle_timeout
        data = await asyncio.wait_for(self.reader.read(4096), timeout)
        if not data:
            return False
        self.core.receive_data(data)
        return True

    async def _flush(self, quiet: bool = False) -> None:
        out = self.core.data_to_send()
        if not out:
            return
        try:
            self.writer.write(out)
            await self.writer.drain()  # back-pressure: a client that does not read waits
        except (ConnectionError, ssl.SSLError):
            if not quiet:
                raise

    # -- requests --------------------------------------------------------------------------
    async def _request(self, req: Request) -> None:
        core, v = self.core, req.verb
        if v == "CAPA":
            caps = list(CAPABILITIES)
            if core.state is State.AUTHORIZATION:
                if core.tls:
                    caps += ["USER", "SASL " + " ".join(MECHANISMS)]
                else:
                    caps.append("STLS")
            core.multiline("Capability list follows", caps)
        elif v == "STLS":
            core.ok("Begin TLS negotiation")
            await self._flush()
            await self.writer.start_tls(self.srv.tls, ssl_handshake_timeout=30)
            core.tls_started()
        elif v == "USER":
            core.ok("Send your password")
        elif v == "PASS":
            await self._login(req.args[0], req.args[1])
        elif v == "AUTH":
            await self._auth(req.args)
        elif v == "QUIT":
            await self._quit()
        elif v in ("RETR", "TOP"):
            await self._retrieve(req)
        else:
            self._transaction(req)

    def _transaction(self, req: Request) -> None:
        core, drop, v = self.core, self.drop, req.verb
        assert drop is not None  # the core admits these only in TRANSACTION
        try:
            if v == "STAT":
                core.ok(drop.stat())
            elif v == "LIST":
                if req.args:
                    core.ok(drop.scan(req.number()))
                else:
                    core.multiline(f"{drop.stat().split()[0]} messages", drop.scan_all())
            elif v == "UIDL":
                if req.args:
                    core.ok(drop.uidl(req.number()))
                else:
                    core.multiline("Unique-ID listing follows", drop.uidl_all())
            elif v == "DELE":
                drop.delete(req.number())
                core.ok(f"Message {req.number()} deleted")
            elif v == "RSET":
                drop.reset()
                core.ok(f"Maildrop has {drop.stat().split()[0]} messages")
            elif v == "NOOP":
                core.ok()
        except Pop3Error as exc:
            core.err(str(exc))

    async def _retrieve(self, req: Request) -> None:
        core, drop = self.core, self.drop
        assert drop is not None
        n = req.number()
        try:
            uid = drop.uid_of(n)
        except Pop3Error as exc:
            core.err(str(exc))
            return
        raw = await repo.message_bytes(self.srv.pool, self.mailbox_id, uid)
        if raw is None:  # RFC 2449 §8: a message another client expunged meanwhile
            core.err(f"Message {n} was removed by another session")
            return
        if req.verb == "RETR":
            drop.retrieved.add(n)
            core.multiline(f"{len(raw)} octets", raw)
        else:
            core.multiline("Top of message follows", top_of(raw, req.number(1)))

    # -- authentication --------------------------------------------------------------------
    async def _auth(self, args: tuple[str, ...]) -> None:
        core = self.core
        if not args:  # the de-facto listing (RFC 5034 leaves it to CAPA)
            core.multiline("Mechanisms follow", list(MECHANISMS))
            return
        if args[0].upper() not in MECHANISMS:
            core.err("Unsupported authentication mechanism")
            return
        if len(args) == 2:  # RFC 5034 §4: initial response; "=" is the empty one
            await self._plain("" if args[1] == "=" else args[1])
            return
        core.sasl_started()
        core.continuation()

    async def _sasl_response(self, line: str) -> None:
        self.core.sasl_ended()
        if line == "*":  # RFC 5034 §4: the client cancels
            self.core.err("Authentication cancelled")
            return
        await self._plain(line)

    async def _plain(self, b64: str) -> None:
        try:  # RFC 4616: [authzid] NUL authcid NUL passwd
            authz, user, password = base64.b64decode(b64, validate=True).decode().split("\0")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            self.core.err("[AUTH] Malformed PLAIN response")
            return
        if authz and authz != user:
            self.core.err("[AUTH] Proxy authorization is not allowed")
            return
        await self._login(user, password)

    async def _login(self, user: str, password: str) -> None:
        res = await self.srv.auth.authenticate(user, password, protocol="pop3",
                                               remote=self.remote)
        if not res.ok or res.account is None:
            self.core.err("[AUTH] Authentication failed")
            return
        snap = await repo.inbox_snapshot(self.srv.pool, res.account.address)
        if snap is None:
            self.core.err("[SYS/PERM] No INBOX for this account")
            return
        self.address, self.mailbox_id = res.account.address, snap.mailbox_id
        self.drop = Maildrop(snap.uidvalidity, snap.messages)
        self.core.logged_in()
        log.info("pop3 login user=%s remote=%s messages=%d", self.address, self.remote,
                 len(snap.messages))
        self.core.ok(f"Logged in, {len(snap.messages)} messages")

    # -- UPDATE ----------------------------------------------------------------------------
    async def _quit(self) -> None:
        drop = self.drop
        if drop is None:  # RFC 1939 §5: QUIT in AUTHORIZATION does not enter UPDATE
            self.core.ok("Bye")
            self.core.quit()
            return
        deleted, seen = drop.deleted_uids(), drop.retrieved_uids()
        try:
            if seen:
                await self.srv.store.store_flags(self.mailbox_id, seen, "+", ["\\Seen"])
            gone: list[int] = []
            if deleted:
                await self.srv.store.store_flags(self.mailbox_id, deleted, "+", ["\\Deleted"])
                gone = await self.srv.store.expunge(self.mailbox_id, deleted)
        except Exception as exc:  # noqa: BLE001 - RFC 1939 §6: say the UPDATE failed
            log.warning("pop3 update of %s failed: %s", self.address, exc)
            self.core.err("[SYS/TEMP] Some deleted messages were not removed")
            self.core.quit()
            return
        log.info("pop3 logout user=%s deleted=%d", self.address, len(gone))
        self.core.ok(f"Logging out, {len(gone)} messages deleted")
        self.core.quit()
