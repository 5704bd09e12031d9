"""A small IMAP4rev1 client on raw asyncio streams (RFC 3501), enough for load and verification.

Commands: LOGIN, AUTHENTICATE PLAIN (RFC 4959 initial response), STARTTLS, SELECT, NOOP,
UID SEARCH, UID FETCH, STORE, IDLE (RFC 2177), LOGOUT. Responses come back as raw lines
with literals inlined, which is all the harness needs (it looks for numbers and headers).
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl

from load.options import Target
from load.smtpclient import LoadError, abort_writer

_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
_EXISTS = re.compile(rb"^\* (\d+) EXISTS", re.M)


class ImapError(LoadError):
    """A NO/BAD reply; class `imap-no` or `imap-bad`."""

    def __init__(self, status: str, text: str, during: str) -> None:
        super().__init__(f"{during}: {status} {text}", f"imap-{status.lower()}")


def quote(s: str) -> str:
    """An IMAP quoted string (RFC 3501 §4.3)."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapClient:
    """One IMAP connection. Create with `await ImapClient.connect(...)`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self._tag = 0
        self.capabilities: set[str] = set()

    @classmethod
    async def connect(cls, target: Target, *, io_timeout: float = 30.0,
                      ssl_ctx: ssl.SSLContext | None = None, implicit_tls: bool = False,
                      starttls: bool = False, server_hostname: str | None = None) -> ImapClient:
        async with asyncio.timeout(io_timeout):
            try:
                reader, writer = await asyncio.open_connection(
                    target.host, target.port, limit=1 << 22,
                    ssl=(ssl_ctx or ssl.create_default_context()) if implicit_tls else None,
                    server_hostname=(server_hostname or target.host) if implicit_tls else None)
            except ssl.SSLError:
                raise
            except OSError as e:
                raise LoadError(f"connect {target}: {e}", "connect") from e
            client = cls(reader, writer, io_timeout)
            try:
                greeting = await client.read_line()
                if not greeting.startswith((b"* OK", b"* PREAUTH")):
                    raise LoadError(f"bad IMAP greeting {greeting[:60]!r}", "protocol")
                if starttls:
                    await client.command("STARTTLS")
                    await writer.start_tls(ssl_ctx or ssl.create_default_context(),
                                           server_hostname=server_hostname or target.host)
            except BaseException:
                client.abort()
                raise
            return client

    async def read_line(self) -> bytes:
        """One response line with any literals inlined (RFC 3501 §4.3)."""
        parts = []
        while True:
            line = await self.reader.readuntil(b"\n")
            m = _LITERAL.search(line)
            if not m:
                parts.append(line)
                return b"".join(parts)
            parts.append(line)
            parts.append(await self.reader.readexactly(int(m.group(1))))

    def _next_tag(self) -> bytes:
        self._tag += 1
        return b"L%d" % self._tag

    async def command(self, cmd: str, during: str | None = None) -> list[bytes]:
        """Send a command, return its untagged lines; NO/BAD raise `ImapError`."""
        tag = self._next_tag()
        self.writer.write(tag + b" " + cmd.encode("utf-8") + b"\r\n")
        return await self._collect(tag, during or cmd.split(" ", 1)[0])

    async def _collect(self, tag: bytes, during: str) -> list[bytes]:
        untagged: list[bytes] = []
        prefix = tag + b" "
        while True:
            line = await self.read_line()
            if line.startswith(prefix):
                status, _, text = line[len(prefix):].partition(b" ")
                st = status.decode("ascii", "replace").upper()
                if st != "OK":
                    raise ImapError(st, text.decode("utf-8", "replace").strip(), during)
                return untagged
            if line.startswith(b"+"):
                raise LoadError(f"{during}: unexpected continuation", "protocol")
            untagged.append(line)

    async def login(self, user: str, password: str) -> None:
        await self.command(f"LOGIN {quote(user)} {quote(password)}", "LOGIN")

    async def authenticate_plain(self, user: str, password: str) -> None:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode("ascii")
        await self.command(f"AUTHENTICATE PLAIN {token}", "AUTHENTICATE")

    async def select(self, mailbox: str = "INBOX") -> dict[str, int]:
        """SELECT; returns EXISTS and UIDNEXT when the server sends them."""
        out: dict[str, int] = {}
        for line in await self.command(f"SELECT {quote(mailbox)}"):
            if m := _EXISTS.match(line):
                out["EXISTS"] = int(m.group(1))
            if m := re.search(rb"\[UIDNEXT (\d+)\]", line):
                out["UIDNEXT"] = int(m.group(1))
        return out

    async def noop(self) -> int | None:
        """NOOP; returns the latest EXISTS count the server reported, if any."""
        exists = None
        for line in await self.command("NOOP"):
            if m := _EXISTS.match(line):
                exists = int(m.group(1))
        return exists

    async def uid_search(self, criteria: str) -> list[int]:
        uids: list[int] = []
        for line in await self.command(f"UID SEARCH {criteria}"):
            if line.startswith(b"* SEARCH"):
                uids.extend(int(x) for x in line[8:].split())
        return uids

    async def uid_fetch(self, uids: str, items: str) -> list[bytes]:
        return [ln for ln in await self.command(f"UID FETCH {uids} {items}")
                if b" FETCH " in ln[:40]]

    async def idle(self, until: asyncio.Event, max_wait: float) -> list[bytes]:
        """IDLE (RFC 2177) until an untagged response arrives, `until` is set, or timeout."""
        tag = self._next_tag()
        self.writer.write(tag + b" IDLE\r\n")
        line = await self.read_line()
        if not line.startswith(b"+"):
            raise LoadError(f"IDLE refused: {line[:60]!r}", "protocol")
        got: list[bytes] = []
        read = asyncio.ensure_future(self.read_line())
        stop = asyncio.ensure_future(until.wait())
        try:
            done, _ = await asyncio.wait({read, stop}, timeout=max_wait,
                                         return_when=asyncio.FIRST_COMPLETED)
            if read in done:
                got.append(read.result())
        finally:
            stop.cancel()
        self.writer.write(b"DONE\r\n")
        if not read.done():
            first = await read
            if first.startswith(tag + b" "):
                if not first[len(tag) + 1:].upper().startswith(b"OK"):
                    raise ImapError("BAD", first.decode("utf-8", "replace"), "IDLE")
                return got
            got.append(first)
        got.extend(await self._collect(tag, "IDLE"))
        return got

    async def logout(self) -> None:
        try:
            async with asyncio.timeout(min(self.timeout, 5.0)):
                await self.command("LOGOUT")
        except Exception:
            pass
        finally:
            self.abort()

    def abort(self) -> None:
        abort_writer(self.writer)
