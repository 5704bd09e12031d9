"""SMTP delivery-core benchmark (issue 3): accepted and end-to-end msg/s, 250 latency, CPU.

Starts `cxgw serve` on a fresh state directory (embedded PostgreSQL), seeds the demo city
(2,700 accounts), then drives it with the load harness (`python -m load smtp-burst`):
  1. 20 sessions, 2 KB, one message per connection;
  2. 20 sessions, 2 KB, connection reuse (PIPELINING);
  3. a circular to all 2,700 accounts: end of DATA until the 250. Local delivery happens
     inside the submission transaction, so at the 250 the message is already in every
     INBOX (the bench checks the count right after the 250: no poll is timed);
  4. the queue path: authenticated submission to a remote address, relayed through the
     durable queue to a sink on loopback (the smarthost); end to end = until the sink has
     every message, and the sink counts duplicates (each Message-ID must arrive once);
  5. Postfix's `smtp-source` as the load generator, if installed.
End to end = until every message is in its mailbox (counted in PostgreSQL) or at the sink.
CPU is the server process plus its PostgreSQL processes (benchmarks/cpu.py), per message.

    .venv/bin/python benchmarks/smtp_bench.py [--count 5000] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg
from cpu import ServerCPU
from serverproc import PY, ROOT, cli, free_port, start


def cpu_seconds(server_pid: int, pgdata: Path) -> tuple[float, float]:
    """(server CPU, PostgreSQL CPU) in seconds."""
    s = ServerCPU([server_pid], pgdata).sample()
    return s.server, s.database


async def delivered(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("select count(*) from mailbox_messages"))
    finally:
        await conn.close()


async def wait_delivered(url: str, target: int, limit: float = 300) -> float:
    t0 = time.monotonic()
    conn = await asyncpg.connect(url)
    try:
        while time.monotonic() - t0 < limit:
            if await conn.fetchval("select count(*) from mailbox_messages") >= target:
                return time.monotonic()
            await asyncio.sleep(0.005)
    finally:
        await conn.close()
    raise SystemExit("messages not delivered in time")


def run_load(port: int, creds: Path, count: int, reuse: bool, out: Path,
             extra: tuple[str, ...] = ("--from", "bench@load.example")) -> dict:
    argv = [PY, "-m", "load", "smtp-burst", "--target", f"127.0.0.1:{port}", "--connections", "20",
            "--count", str(count), "--size", "2k", "--credentials", str(creds),
            "--quiet", "--json", str(out), *extra]
    if reuse:
        argv.append("--reuse")
    subprocess.run(argv, cwd=ROOT, check=False)
    return json.loads(out.read_text())


async def burst(name: str, proc: subprocess.Popen[str], ports: dict[str, int], state: Path,
                url: str, count: int, reuse: bool) -> dict:
    pgdata = state / "var" / "pg"
    base = await delivered(url)
    c0 = cpu_seconds(proc.pid, pgdata)
    t0 = time.monotonic()
    res = await asyncio.get_running_loop().run_in_executor(
        None, run_load, ports["smtp"], state / "var" / "demo-passwords.csv", count, reuse,
        state / f"{name}.json")
    t_acc = time.monotonic()
    t_all = await wait_delivered(url, base + res["delivered"])
    c1 = cpu_seconds(proc.pid, pgdata)
    n = max(res["delivered"], 1)
    return {"scenario": name, "sent": res["sent"], "accepted": res["delivered"],
            "failed": res["failed"], "lost": res["lost"],
            "accepted_per_s": round(res["throughput_per_s"], 1),
            "e2e_per_s": round(n / (t_all - t0), 1),
            "p50_ms": res["latency_ms"]["p50"], "p99_ms": res["latency_ms"]["p99"],
            "server_cpu_ms_per_msg": round((c1[0] - c0[0]) * 1000 / n, 3),
            "postgres_cpu_ms_per_msg": round((c1[1] - c0[1]) * 1000 / n, 3),
            "harness_wall_s": round(t_acc - t0, 2)}


async def circular(ports: dict[str, int], state: Path, url: str) -> dict:
    lines = (state / "var" / "demo-passwords.csv").read_text().splitlines()[1:]
    rcpts = [ln.split(",")[0] for ln in lines]
    base = await delivered(url)
    r, w = await asyncio.open_connection("127.0.0.1", ports["smtp"])

    async def cmd(line: bytes) -> bytes:
        w.write(line)
        await w.drain()
        while True:
            reply = await r.readline()
            if reply[3:4] != b"-":
                return reply

    await r.readline()
    await cmd(b"EHLO bench\r\n")
    await cmd(b"MAIL FROM:<mayor@outside.example>\r\n")
    # PIPELINING: all RCPTs in one write, then read the replies
    w.write(b"".join(f"RCPT TO:<{a}>\r\n".encode() for a in rcpts))
    await w.drain()
    for _ in rcpts:
        assert (await r.readline()).startswith(b"250")
    await cmd(b"DATA\r\n")
    body = (b"From: mayor@outside.example\r\nSubject: circular\r\n\r\n" + (b"x" * 76 + b"\r\n") * 26 + b".\r\n")
    t_send = time.monotonic()
    reply = await cmd(body)
    t_250 = time.monotonic()
    assert reply.startswith(b"250"), reply
    in_boxes = await delivered(url) - base  # read once, right after the 250: no poll timed
    w.close()
    return {"scenario": "circular", "recipients": len(rcpts),
            "data_to_250_ms": round((t_250 - t_send) * 1000, 1),
            "in_every_inbox_at_250": in_boxes == len(rcpts), "in_inboxes_at_250": in_boxes}


class Sink(asyncio.Protocol):
    """A minimal SMTP sink for the queue path: counts each Message-ID it receives."""

    seen: dict[bytes, int] = {}
    last = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf, self.data = b"", False
        self.t.write(b"220 sink ESMTP\r\n")

    def data_received(self, chunk: bytes) -> None:
        self.buf += chunk
        while True:
            if self.data:
                end = self.buf.find(b"\r\n.\r\n")
                if end < 0:
                    return
                msg, self.buf, self.data = self.buf[:end], self.buf[end + 5:], False
                head = msg.split(b"\r\n\r\n", 1)[0]
                mid = next((ln.split(b":", 1)[1].strip() for ln in head.split(b"\r\n")
                            if ln.lower().startswith(b"message-id:")), b"?")
                Sink.seen[mid] = Sink.seen.get(mid, 0) + 1
                Sink.last = time.monotonic()
                self.t.write(b"250 2.0.0 ok\r\n")
                continue
            i = self.buf.find(b"\r\n")
            if i < 0:
                return
            line, self.buf = self.buf[:i].upper(), self.buf[i + 2:]
            if line.startswith(b"EHLO"):
                self.t.write(b"250-sink\r\n250 PIPELINING\r\n")
            elif line.startswith(b"DATA"):
                self.data = True
                self.t.write(b"354 go\r\n")
            elif line.startswith(b"QUIT"):
                self.t.write(b"221 bye\r\n")
                self.t.close()
                return
            else:
                self.t.write(b"250 ok\r\n")


async def queue_path(proc: subprocess.Popen[str], ports: dict[str, int], state: Path,
                     count: int) -> dict:
    """Authenticated submission to a remote address, relayed through the queue to the sink."""
    pgdata = state / "var" / "pg"
    Sink.seen.clear()
    c0 = cpu_seconds(proc.pid, pgdata)
    t0 = time.monotonic()
    res = await asyncio.get_running_loop().run_in_executor(
        None, run_load, ports["submission"], state / "var" / "demo-passwords.csv", count, False,
        state / "queue.json", ("--auth", "--starttls", "--insecure",
                               "--rcpt", "sink@remote.example"))
    for _ in range(30_000):  # the sink is polled: at most 300 s
        if sum(Sink.seen.values()) >= res["delivered"]:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(1)  # late duplicates would arrive now
    c1 = cpu_seconds(proc.pid, pgdata)
    got = len(Sink.seen)
    n = max(res["delivered"], 1)
    if res["failed"] or res["lost"]:
        print(f"queue-relay errors: {res['errors']} {res.get('error_samples')}", flush=True)
    return {"scenario": "queue-relay", "sent": res["sent"], "accepted": res["delivered"],
            "at_sink": got, "duplicated": sum(v - 1 for v in Sink.seen.values()),
            "lost": res["delivered"] - got, "accepted_per_s": round(res["throughput_per_s"], 1),
            "e2e_per_s": round(got / max(Sink.last - t0, 1e-9), 1),
            "server_cpu_ms_per_msg": round((c1[0] - c0[0]) * 1000 / n, 3),
            "postgres_cpu_ms_per_msg": round((c1[1] - c0[1]) * 1000 / n, 3)}


def smtp_source(port: int, count: int, rcpt: str) -> dict | None:
    exe = shutil.which("smtp-source") or ("/usr/sbin/smtp-source" if Path("/usr/sbin/smtp-source").exists() else None)
    if not exe:
        return None
    t0 = time.monotonic()
    subprocess.run([exe, "-s", "20", "-l", "2048", "-m", str(count), "-f", "bench@load.example",
                    "-t", rcpt, f"127.0.0.1:{port}"], check=False)
    dt = time.monotonic() - t0
    return {"scenario": "smtp-source", "count": count, "seconds": round(dt, 2),
            "accepted_per_s": round(count / dt, 1)}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--json")
    args = ap.parse_args()
    state = Path(tempfile.mkdtemp(prefix="cxb"))
    sink_port = free_port()
    sink = await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", sink_port)
    proc, ports = start(state, ("smtp", "submission", "submissions", "http"),
                        smarthost=f"127.0.0.1:{sink_port}")
    results = []
    try:
        cli(state, "demo", "seed")
        await asyncio.sleep(0.5)
        url = f"postgresql://postgres:@/cxgw?host={state / 'var' / 'pg'}"
        for name, reuse in (("burst-one-per-connection", False), ("burst-reuse", True)):
            results.append(await burst(name, proc, ports, state, url, args.count, reuse))
            print(json.dumps(results[-1]), flush=True)
        results.append(await circular(ports, state, url))
        print(json.dumps(results[-1]), flush=True)
        results.append(await queue_path(proc, ports, state, args.count))
        print(json.dumps(results[-1]), flush=True)
        first = (state / "var" / "demo-passwords.csv").read_text().splitlines()[1].split(",")[0]
        src = smtp_source(ports["smtp"], 5000, first)
        if src:
            results.append(src)
            print(json.dumps(src), flush=True)
        else:
            print('{"scenario": "smtp-source", "skipped": "postfix smtp-source not installed"}')
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        sink.close()
        shutil.rmtree(state, ignore_errors=True)
    if args.json:
        out = json.dumps({"machine": os.uname().nodename, "cpus": os.cpu_count(),
                          "results": results}, indent=2)
        await asyncio.to_thread(Path(args.json).write_text, out)


if __name__ == "__main__":
    asyncio.run(main())
