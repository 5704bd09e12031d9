"""SMTP sinks to measure the load harness itself (not a server under test).

    python benchmarks/smtp_sink.py --port 2525                    # aiosmtpd, one process
    python benchmarks/smtp_sink.py --port 2525 --procs 2          # SO_REUSEPORT, 2 processes
    python benchmarks/smtp_sink.py --port 2525 --impl raw         # minimal asyncio sink
    python benchmarks/smtp_sink.py --port 2525 --pipelining       # aiosmtpd + PIPELINING

`aiosmtpd` is a real SMTP server library and shows what a Python server costs; `raw` is a
protocol-minimal sink (answers every line, swallows DATA) that shows how far the client
can go when the server is not the bottleneck, like Postfix's smtp-sink.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import socket
import sys
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


class CountingHandler:
    """Accepts everything, counts messages; rejects recipients whose local part says so."""

    def __init__(self) -> None:
        self.messages = 0

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        local = address.split("@", 1)[0]
        if local.startswith("reject5"):
            return "550 5.1.1 no such user"
        if local.startswith("reject4"):
            return "450 4.2.1 mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages += 1
        return "250 2.0.0 OK queued"


class PipeliningHandler(CountingHandler):
    """aiosmtpd reads commands line by line, so pipelined batches work; say so in EHLO."""

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


class RawSink(asyncio.Protocol):
    """Answers each command line; swallows DATA until the dot. Not a real SMTP server."""

    def connection_made(self, transport: Any) -> None:
        self.t = transport
        self.buf = b""
        self.in_data = False
        transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buf += data
        out = []
        while True:
            if self.in_data:
                i = self.buf.find(b"\r\n.\r\n")
                if i < 0:
                    if self.buf.startswith(b".\r\n"):
                        i = -2
                    else:
                        self.buf = self.buf[-4:]
                        break
                self.buf = self.buf[i + 5:]
                self.in_data = False
                out.append(b"250 2.0.0 OK\r\n")
                continue
            i = self.buf.find(b"\r\n")
            if i < 0:
                break
            line, self.buf = self.buf[:i], self.buf[i + 2:]
            verb = line[:4].upper()
            if verb == b"EHLO":
                out.append(b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                out.append(b"354 go ahead\r\n")
                self.in_data = True
                self.buf = b"\r\n" + self.buf  # so a body starting with ".\r\n" still ends
            elif verb == b"QUIT":
                out.append(b"221 bye\r\n")
                self.t.write(b"".join(out))
                self.t.close()
                return
            else:
                out.append(b"250 OK\r\n")
        if out:
            self.t.write(b"".join(out))


def _serve(host: str, port: int, impl: str, pipelining: bool) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        handler = PipeliningHandler() if pipelining else CountingHandler()
        if impl == "raw":
            server = await loop.create_server(RawSink, sock=sock, backlog=1024)
        else:
            server = await loop.create_server(lambda: SMTP(handler, hostname="sink"),
                                              sock=sock, backlog=1024)
        print(f"sink {impl} pid {os.getpid()} on {host}:{port}", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=2525)
    ap.add_argument("--impl", choices=["aiosmtpd", "raw"], default="aiosmtpd")
    ap.add_argument("--pipelining", action="store_true", help="aiosmtpd: advertise PIPELINING")
    ap.add_argument("--procs", type=int, default=1)
    a = ap.parse_args()
    if a.procs <= 1:
        _serve(a.host, a.port, a.impl, a.pipelining)
        return
    procs = [multiprocessing.Process(target=_serve, args=(a.host, a.port, a.impl, a.pipelining),
                                     daemon=True) for _ in range(a.procs)]
    for p in procs:
        p.start()

    def stop(*_: object) -> None:
        for p in procs:
            p.terminate()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        stop()

if __name__ == "__main__":
    main()
