"""ManageSieve server (RFC 5804) on ``listen.managesieve`` (4190): users edit their Sieve
scripts from Thunderbird (sieve add-on), Roundcube's managesieve plugin or sieve-connect.

STARTTLS, then AUTHENTICATE PLAIN through the directory's authenticator (same lockout as
every protocol); PUTSCRIPT and CHECKSCRIPT compile the script and answer NO with the
compiler's message when it does not compile, so only runnable scripts are stored.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from cxkernel.limiter import ConnectionLimiter, peer_ip

from . import repo
from .interp import MAX_REDIRECTS
from .msproto import MAX_LINE, CommandReader, MsCommand, ProtocolError, bye, no, ok, string
from .script import EXTENSIONS, MAX_SCRIPT_BYTES, SieveError, compile_script

log = logging.getLogger("cxgw.sieve")

MAX_ERRORS = 10


@dataclass(frozen=True)
class ManageSieveConfig:
    max_scripts: int = 20
    unauth_timeout: float = 60.0
    idle_timeout: float = 1800.0


class ManageSieveServer:
    def __init__(self, pool: asyncpg.Pool, auth: Any, tls: ssl.SSLContext,
                 cfg: ManageSieveConfig, limiter: ConnectionLimiter | None = None) -> None:
        self.pool, self.auth, self.tls, self.cfg = pool, auth, tls, cfg
        self.limiter = limiter  # caps (cxkernel.limiter)
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def listen(self, host: str, port: int) -> int:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            limiter = self.limiter
            ticket = limiter.admit(peer_ip(w.transport)) if limiter is not None else None
            if limiter is not None and ticket is None:  # RFC 5804 §1.3: BYE (TRYLATER)
                w.write(bye("Too many connections", "TRYLATER"))
                w.close()
                return
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                await _Session(self, r, w).run()
            finally:
                self._tasks.discard(task)
                if ticket is not None:
                    ticket.release()

        srv = await asyncio.start_server(handle, host, port)
        self._servers.append(srv)
        return int(srv.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for s in self._servers:
            s.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._servers.clear()


class _Session:
    def __init__(self, srv: ManageSieveServer, r: asyncio.StreamReader,
                 w: asyncio.StreamWriter) -> None:
        self.srv, self.r, self.w = srv, r, w
        self.tls = False
        self.user: str | None = None
        self.reader = CommandReader(MAX_LINE)
        peer = w.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else ""
        self.deadline = time.monotonic() + srv.cfg.unauth_timeout
        self.errors = 0

    def capabilities(self) -> bytes:
        caps = [("IMPLEMENTATION", "cx-gateway"),
                # RFC 5804 §1.7: no mechanisms that expose the password before TLS
                ("SASL", "PLAIN" if self.tls else ""),
                ("SIEVE", " ".join(EXTENSIONS)),
                ("MAXREDIRECTS", str(MAX_REDIRECTS)),
                ("VERSION", "1.0")]
        if not self.tls:
            caps.append(("STARTTLS", ""))
        out = b"".join(string(k) + (b" " + string(v) if v or k == "SASL" else b"") + b"\r\n"
                       for k, v in caps)
        return out + ok()

    async def run(self) -> None:
        try:
            await self.send(self.capabilities())  # RFC 5804 §1.7: the greeting
            while await self.step():
                pass
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        except TimeoutError:
            await self.send(bye("Disconnected for inactivity", "TRYLATER"), quiet=True)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("managesieve session of %s failed: %s", self.user or self.remote, exc)
            await self.send(bye("Temporary server failure", "TRYLATER"), quiet=True)
        finally:
            self.w.close()

    async def send(self, data: bytes, quiet: bool = False) -> None:
        try:
            self.w.write(data)
            await self.w.drain()
        except (ConnectionError, ssl.SSLError):
            if not quiet:
                raise

    async def step(self) -> bool:
        while True:
            try:
                cmd = self.reader.next()
            except ProtocolError as exc:
                if exc.fatal:
                    await self.send(bye(str(exc)))
                    return False
                return await self.refuse(str(exc))
            if cmd is not None:
                return await self.command(cmd)
            timeout = (self.deadline - time.monotonic() if self.user is None
                       else self.srv.cfg.idle_timeout)
            if timeout <= 0:
                raise TimeoutError
            data = await asyncio.wait_for(self.r.read(65536), timeout)
            if not data:
                return False
            self.reader.feed(data)

    async def refuse(self, text: str, code: str = "") -> bool:
        self.errors += 1
        if self.errors >= MAX_ERRORS:
            await self.send(bye("Too many errors"))
            return False
        await self.send(no(text, code))
        return True

    async def command(self, cmd: MsCommand) -> bool:
        name, args = cmd.name, cmd.args
        if name == "LOGOUT":
            await self.send(ok("Logout completed"))
            return False
        if name == "CAPABILITY":
            await self.send(self.capabilities())
            return True
        if name == "NOOP":
            await self.send(ok("Done", f'TAG {string(str(args[0])).decode()}' if args else ""))
            return True
        if name == "STARTTLS":
            if self.tls:
                return await self.refuse("TLS is already active")
            await self.send(ok("Begin TLS negotiation"))
            await self.w.start_tls(self.srv.tls, ssl_handshake_timeout=30)
            self.tls = True
            self.reader = CommandReader(MAX_LINE)  # §2.2: nothing buffered survives
            await self.send(self.capabilities())  # §2.2: capabilities again after TLS
            return True
        if name == "AUTHENTICATE":
            return await self.authenticate(args)
        if self.user is None:
            return await self.refuse("Authenticate first")
        if name == "UNAUTHENTICATE":
            self.user = None
            self.reader.max_literal = MAX_LINE
            await self.send(ok("Unauthenticated"))
            return True
        try:
            return await self.script_command(name, [str(a) for a in args])
        except repo.SieveRepoError as exc:
            await self.send(no(str(exc), exc.code))
            return True

    async def authenticate(self, args: tuple[str | int, ...]) -> bool:
        if self.user is not None:
            return await self.refuse("Already authenticated")
        if not self.tls:  # §2.1: PLAIN only over TLS
            return await self.refuse("Use STARTTLS first", "ENCRYPT-NEEDED")
        if not args or str(args[0]).upper() != "PLAIN":
            return await self.refuse("Unsupported mechanism")
        if len(args) > 1:
            resp = str(args[1])
        else:
            await self.send(b'""\r\n')  # §2.1: an empty challenge
            self.reader.continuation = True
            while (cmd := self.reader.next()) is None:
                data = await asyncio.wait_for(self.r.read(8192),
                                              max(0.01, self.deadline - time.monotonic()))
                if not data:
                    return False
                self.reader.feed(data)
            resp = str(cmd.args[0]) if cmd.args else ""
        if resp == "*":
            await self.send(no("Authentication cancelled"))
            return True
        try:
            authz, user, password = base64.b64decode(resp, validate=True).decode().split("\0")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return await self.refuse("Malformed PLAIN response")
        if authz and authz != user:
            return await self.refuse("Proxy authorization is not allowed", "AUTHZ-FAILED")
        res = await self.srv.auth.authenticate(user, password, protocol="managesieve",
                                               remote=self.remote)
        if not res.ok or res.account is None:
            return await self.refuse("Authentication failed")
        self.user = res.account.address
        self.reader.max_literal = MAX_SCRIPT_BYTES
        log.info("managesieve login user=%s remote=%s", self.user, self.remote)
        await self.send(ok("Logged in"))
        return True

    async def script_command(self, name: str, args: list[str]) -> bool:
        pool, user = self.srv.pool, self.user
        assert user is not None
        need = {"LISTSCRIPTS": 0, "GETSCRIPT": 1, "DELETESCRIPT": 1, "SETACTIVE": 1,
                "PUTSCRIPT": 2, "CHECKSCRIPT": 1, "HAVESPACE": 2, "RENAMESCRIPT": 2}
        if name not in need:
            return await self.refuse(f"Unknown command {name[:20]}")
        if len(args) != need[name]:
            return await self.refuse(f"Wrong number of arguments for {name}")
        if name == "LISTSCRIPTS":
            out = b"".join(string(s.name) + (b" ACTIVE" if s.active else b"") + b"\r\n"
                           for s in await repo.list_scripts(pool, user))
            await self.send(out + ok())
        elif name == "GETSCRIPT":
            src = await repo.get_script(pool, user, args[0])
            if src is None:
                await self.send(no("There is no script by that name", "NONEXISTENT"))
            else:
                b = src.encode("utf-8")
                await self.send(b"{%d}\r\n" % len(b) + b + b"\r\n" + ok())
        elif name in ("PUTSCRIPT", "CHECKSCRIPT"):
            src = args[-1]
            try:
                compile_script(src)
            except SieveError as exc:  # §2.6: a script that does not compile is refused
                await self.send(no(str(exc)))
                return True
            if name == "PUTSCRIPT":
                if not _valid_name(args[0]):
                    return await self.refuse("Bad script name")
                await repo.put_script(pool, user, args[0], src, self.srv.cfg.max_scripts)
            await self.send(ok())
        elif name == "HAVESPACE":
            size = int(args[1]) if args[1].isdigit() else -1
            if size < 0 or size > MAX_SCRIPT_BYTES:
                await self.send(no("Script too large", "QUOTA/MAXSIZE"))
            else:
                await self.send(ok())
        elif name == "SETACTIVE":
            await repo.set_active(pool, user, args[0])
            await self.send(ok())
        elif name == "DELETESCRIPT":
            await repo.delete_script(pool, user, args[0])
            await self.send(ok())
        elif name == "RENAMESCRIPT":
            if not _valid_name(args[1]):
                return await self.refuse("Bad script name")
            await repo.rename_script(pool, user, args[0], args[1])
            await self.send(ok())
        return True


def _valid_name(name: str) -> bool:
    """RFC 5804 §1.6: no control characters; we also bound the length."""
    return 0 < len(name) <= 128 and not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in name)
