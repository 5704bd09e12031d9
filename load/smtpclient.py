"""A lean SMTP client on raw asyncio streams, built for load: pipelining, no per-line parsing cost.

It speaks RFC 5321 with the extensions a load run needs: STARTTLS (RFC 3207), AUTH PLAIN
(RFC 4954 / RFC 4616) and PIPELINING (RFC 2920), which turns MAIL/RCPT/DATA into one write
and one read batch. Errors carry their class (`smtp-4xx`, `smtp-5xx`, `connect`, `timeout`,
`tls`, `protocol`, `disconnect`) so the harness can count them without inspecting them.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from dataclasses import dataclass, field

from load.options import Target

_STREAM_LIMIT = 1 << 20


class LoadError(Exception):
    """An error with a class name for the accounting (`errors: {class: count}`)."""

    cls = "protocol"

    def __init__(self, message: str, cls: str | None = None) -> None:
        super().__init__(message)
        if cls:
            self.cls = cls


def abort_writer(writer: asyncio.StreamWriter) -> None:
    """Drop a connection at once (no close handshake); never raises. Shared by the
    SMTP, IMAP and XMPP clients."""
    try:
        writer.transport.abort()
    except Exception:
        pass


class ReplyError(LoadError):
    """The server answered with a 4xx/5xx reply where we needed success."""

    def __init__(self, code: int, text: str, during: str) -> None:
        super().__init__(f"{during}: {code} {text}", reply_class(code))
        self.code = code


def reply_class(code: int) -> str:
    return "smtp-4xx" if 400 <= code < 500 else "smtp-5xx" if code >= 500 else "protocol"


def classify(exc: BaseException) -> str:
    """Map any exception raised while talking to a server to an error class."""
    if isinstance(exc, LoadError):
        return exc.cls
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return "tls"
    if isinstance(exc, asyncio.IncompleteReadError | ConnectionResetError | BrokenPipeError |
                  ConnectionAbortedError):
        return "disconnect"
    if isinstance(exc, ConnectionRefusedError | OSError):
        return "connect"
    if isinstance(exc, ValueError | asyncio.LimitOverrunError):
        return "protocol"
    return "internal"


@dataclass
class TxResult:
    """Outcome of one mail transaction."""

    accepted: list[str] = field(default_factory=list)
    rejected: list[tuple[str, int]] = field(default_factory=list)  # (rcpt, code)
    final_code: int = 0
    final_text: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.final_code < 300 and bool(self.accepted)


class SmtpClient:
    """One SMTP connection. Create with `await SmtpClient.connect(...)`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.extensions: dict[str, str] = {}
        self.data_sent = False  # the final dot of the current transaction went out

    # -- setup ---------------------------------------------------------------------------
    @classmethod
    async def connect(cls, target: Target, *, io_timeout: float = 30.0, helo: str = "load.invalid",
                      ssl_ctx: ssl.SSLContext | None = None, implicit_tls: bool = False,
                      starttls: bool = False, server_hostname: str | None = None,
                      auth: tuple[str, str] | None = None) -> SmtpClient:
        """Connect, read the greeting, EHLO, optionally STARTTLS and AUTH PLAIN."""
        async with asyncio.timeout(io_timeout):
            try:
                reader, writer = await asyncio.open_connection(
                    target.host, target.port, limit=_STREAM_LIMIT,
                    ssl=ssl_ctx if implicit_tls else None,
                    server_hostname=(server_hostname or target.host) if implicit_tls else None)
            except ssl.SSLError:
                raise
            except OSError as e:
                raise LoadError(f"connect {target}: {e}", "connect") from e
            client = cls(reader, writer, io_timeout)
            try:
                code, lines = await client.read_reply()
                if code != 220:
                    raise ReplyError(code, " ".join(lines), "greeting")
                await client.ehlo(helo)
                if starttls:
                    await client.starttls(ssl_ctx or ssl.create_default_context(),
                                          server_hostname or target.host)
                    await client.ehlo(helo)
                if auth:
                    await client.auth_plain(*auth)
            except BaseException:
                client.abort()
                raise
            return client

    async def read_reply(self) -> tuple[int, list[str]]:
        """Read one (possibly multi-line) reply: RFC 5321 §4.2."""
        lines: list[str] = []
        readuntil = self.reader.readuntil
        while True:
            raw = await readuntil(b"\n")
            if len(raw) < 5 or not raw[:3].isdigit():
                raise LoadError(f"bad reply line {raw[:80]!r}", "protocol")
            lines.append(raw[4:].rstrip(b"\r\n").decode("utf-8", "replace"))
            if raw[3:4] != b"-":
                return int(raw[:3]), lines

    async def command(self, line: str) -> tuple[int, list[str]]:
        self.writer.write(line.encode("utf-8") + b"\r\n")
        return await self.read_reply()

    async def ehlo(self, helo: str) -> None:
        code, lines = await self.command(f"EHLO {helo}")
        if code != 250:
            raise ReplyError(code, " ".join(lines), "EHLO")
        self.extensions = {}
        for ln in lines[1:]:
            key, _, val = ln.partition(" ")
            self.extensions[key.upper()] = val

    async def starttls(self, ctx: ssl.SSLContext, server_hostname: str) -> None:
        if "STARTTLS" not in self.extensions:
            raise LoadError("server does not offer STARTTLS", "tls")
        code, lines = await self.command("STARTTLS")
        if code != 220:
            raise ReplyError(code, " ".join(lines), "STARTTLS")
        try:
            await self.writer.start_tls(ctx, server_hostname=server_hostname)
        except ssl.SSLError as e:
            raise LoadError(f"TLS handshake: {e}", "tls") from e

    async def auth_plain(self, user: str, password: str) -> None:
        """AUTH PLAIN with an initial response (RFC 4954 §4, RFC 4616)."""
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode("ascii")
        code, lines = await self.command(f"AUTH PLAIN {token}")
        if code != 235:
            raise ReplyError(code, " ".join(lines), "AUTH")

    # -- transactions --------------------------------------------------------------------
    async def send(self, mail_from: str, rcpts: list[str], data: bytes,
                   pipelining: bool | None = None) -> TxResult:
        """Run one transaction; `data` is the dot-terminated, dot-stuffed payload.

        Replies that refuse recipients or the message are returned in the result; only
        connection-level trouble raises. `self.data_sent` tells the caller whether a raised
        error came after the payload went out (fate unknown) or before (not handed over).
        """
        if pipelining is None:
            pipelining = "PIPELINING" in self.extensions
        self.data_sent = False
        res = TxResult()
        w = self.writer
        if pipelining:  # RFC 2920 §3.1: MAIL, RCPTs and DATA go as one batch
            w.write("".join([f"MAIL FROM:<{mail_from}>\r\n",
                             *(f"RCPT TO:<{r}>\r\n" for r in rcpts),
                             "DATA\r\n"]).encode("utf-8"))
            mcode, mlines = await self.read_reply()
            for r in rcpts:
                code, _ = await self.read_reply()
                if code in (250, 251):
                    res.accepted.append(r)
                else:
                    res.rejected.append((r, mcode if mcode >= 400 else code))
            dcode, dlines = await self.read_reply()
        else:
            mcode, mlines = await self.command(f"MAIL FROM:<{mail_from}>")
            if mcode != 250:
                res.rejected = [(r, mcode) for r in rcpts]
                res.final_code, res.final_text = mcode, " ".join(mlines)
                return res
            for r in rcpts:
                code, _ = await self.command(f"RCPT TO:<{r}>")
                if code in (250, 251):
                    res.accepted.append(r)
                else:
                    res.rejected.append((r, code))
            if not res.accepted:
                await self.rset()
                res.final_code = res.rejected[0][1] if res.rejected else 554
                return res
            dcode, dlines = await self.command("DATA")
        if mcode != 250 and not res.final_code:
            res.final_code, res.final_text = mcode, " ".join(mlines)
        if dcode != 354:
            if not res.final_code:
                res.final_code, res.final_text = dcode, " ".join(dlines)
            if mcode == 250:
                await self.rset()
            return res
        if not res.accepted:  # RFC 2920 §3.1: 354 despite no recipient: send an empty message
            w.write(b".\r\n")
            await self.read_reply()
            res.final_code = res.rejected[0][1] if res.rejected else 554
            return res
        w.write(data)
        self.data_sent = True
        if len(data) > 65536:
            await w.drain()
        code, lines = await self.read_reply()
        res.final_code, res.final_text = code, " ".join(lines)
        return res

    async def rset(self) -> None:
        code, lines = await self.command("RSET")
        if code != 250:
            raise ReplyError(code, " ".join(lines), "RSET")

    async def quit(self) -> None:
        try:
            async with asyncio.timeout(min(self.timeout, 5.0)):
                self.writer.write(b"QUIT\r\n")
                await self.read_reply()
        except Exception:
            pass
        finally:
            self.abort()

    def abort(self) -> None:
        abort_writer(self.writer)
