"""SMTP delivery-core benchmark (issue 3): accepted and end-to-end msg/s, 250 latency, CPU.

Starts `cxgw serve` on a fresh state directory (embedded PostgreSQL), seeds the demo city
(2,700 accounts), then drives it with the load harness (`python -m load smtp-burst`):
  1. 20 sessions, 2 KB, one message per connection;
  2. 20 sessions, 2 KB, connection reuse (PIPELINING);
  3. a circular to all 2,700 accounts: time from the 250 until it is in every INBOX;
  4. Postfix's `smtp-source` as the load generator, if installed.
End to end = until every message is in its mailbox (counted in PostgreSQL). CPU is the
server process plus its PostgreSQL processes, from /proc, per accepted message.

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
import psutil
from serverproc import PY, ROOT, cli, start


def cpu_seconds(server_pid: int, pgdata: Path) -> tuple[float, float]:
    """(server CPU, PostgreSQL CPU) in seconds, children included."""
    def total(p: psutil.Process) -> float:
        t = p.cpu_times()
        return t.user + t.system
    srv = total(psutil.Process(server_pid))
    pm = int((pgdata / "postmaster.pid").read_text().split()[0])
    post = psutil.Process(pm)
    pg = total(post) + sum(total(c) for c in post.children(recursive=True) if c.is_running())
    return srv, pg


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


def run_load(port: int, creds: Path, count: int, reuse: bool, out: Path) -> dict:
    argv = [PY, "-m", "load", "smtp-burst", "--target", f"127.0.0.1:{port}", "--connections", "20",
            "--count", str(count), "--size", "2k", "--credentials", str(creds), "--from",
            "bench@load.example", "--quiet", "--json", str(out)]
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
    t_all = await wait_delivered(url, base + len(rcpts))
    w.close()
    return {"scenario": "circular", "recipients": len(rcpts),
            "data_to_250_ms": round((t_250 - t_send) * 1000, 1),
            "250_to_every_inbox_ms": round((t_all - t_250) * 1000, 1)}


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
    proc, ports = start(state, ("smtp", "submission", "submissions", "http"))
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
        shutil.rmtree(state, ignore_errors=True)
    if args.json:
        out = json.dumps({"machine": os.uname().nodename, "cpus": os.cpu_count(),
                          "results": results}, indent=2)
        await asyncio.to_thread(Path(args.json).write_text, out)


if __name__ == "__main__":
    asyncio.run(main())
