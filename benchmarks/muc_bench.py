"""MUC fan-out benchmark (not a test): one message to a 300-member room, time until every
member has it.

    .venv/bin/python benchmarks/muc_bench.py [--members 300] [--rounds 30] [--burst 100]
        [--nodes 2]

Starts `cxgw serve` in its own process (embedded PostgreSQL in a temporary state dir),
seeds one unit with `members` accounts (so its unit room at conference.<domain> has them
all as members, through the directory sync), logs every member in with the lean raw
client of ``xmpp_bench`` (STARTTLS + SCRAM-SHA-256) and joins them to the room.

- fan-out latency: one member sends one groupchat message; the time from sending until
  the last of the `members` sessions has read it (median / p95 / max over `rounds`);
- burst: `burst` messages sent back to back; time until every member has all of them
  (deliveries per second) and CPU per message and per delivered stanza: the server
  process plus its PostgreSQL (``cpu.ServerCPU``: history rows, archive rows, occupancy).

With ``--nodes 2``: one PostgreSQL (pgserver) and two `cxgw serve` processes on it;
members alternate between the nodes, the first joins alone (its node becomes the room's
home, issue 14) and the sender is a member on the other node, so every message is
forwarded to the home (a hand-off row and a NOTIFY) and half the deliveries go back
across as hand-offs; CPU is both servers plus PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.* (--nodes 2)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu import ServerCPU, describe  # noqa: E402
from xmpp_bench import DOMAIN, Conn, free_port, login, pct, rss_kb, seed, start_server  # noqa: E402

ROOM = f"unit000@conference.{DOMAIN}"
MARK = re.compile(rb"<body>m(\d+)</body>")


async def join(conn: Conn, nick: str) -> None:
    conn.writer.write(b"<presence/>")
    conn.writer.write(f"<presence to='{ROOM}/{nick}'><x xmlns='http://jabber.org/protocol/"
                      f"muc'><history maxstanzas='0'/></x></presence>".encode())
    buf = b""
    while b"code=\"110\"" not in buf and b"code='110'" not in buf:
        data = await asyncio.wait_for(conn.reader.read(65536), 30)
        if not data:
            raise RuntimeError("closed while joining")
        buf += data
        if b"type=\"error\"" in buf and ROOM.encode() in buf:
            raise RuntimeError(f"join refused: {buf[-400:]!r}")


class Member:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.seen: dict[int, float] = {}
        self.got = asyncio.Event()
        self.want = -1

    async def read(self) -> None:
        tail = b""
        while True:
            data = await self.conn.reader.read(262144)
            if not data:
                return
            now = time.perf_counter()
            chunk = tail + data
            for m in MARK.finditer(chunk):
                n = int(m.group(1))
                self.seen.setdefault(n, now)
                if n >= self.want >= 0:
                    self.got.set()
            tail = chunk[-64:]


async def two_nodes(args: argparse.Namespace) -> None:
    import xmpp_nodes_bench
    users = [(f"m{i:04d}", "unit000") for i in range(args.members)]
    print(f"seeding {len(users)} accounts in one unit ...", flush=True)
    async with xmpp_nodes_bench.two_nodes({}, users, {"unit000"}, "cxmucnodes") as (
            procs, ports, _url, cpu):
        print(f"two nodes (pids {procs[0].pid}, {procs[1].pid}) on one PostgreSQL; the "
              f"room's home is node A, the sender is on node B", flush=True)
        await run(args, procs[0].pid, ports, cpu)


async def main_async(args: argparse.Namespace) -> None:
    if args.nodes == 2:
        await two_nodes(args)
        return
    tmp = Path(tempfile.mkdtemp(prefix="cxmucbench"))
    port = free_port()
    cfg_data: dict[str, dict[str, Any]] = {
        "server": {"domain": DOMAIN, "state_dir": str(tmp / "state")},
        "listen": {k: "" for k in ("smtp", "submission", "submissions", "imap", "imaps",
                                   "http", "xmpps")} | {"xmpp": f"127.0.0.1:{port}"},
        "xmpp": {"rate_bytes_per_s": 100_000_000},
    }
    users = [(f"m{i:04d}", "unit000") for i in range(args.members)]
    print(f"seeding {len(users)} accounts in one unit ...", flush=True)
    await seed(cfg_data, users, {"unit000"})
    toml = tmp / "cxgw.toml"
    lines = []
    for section, values in cfg_data.items():
        lines.append(f"[{section}]")
        for k, v in values.items():
            lines.append(f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}")
    toml.write_text("\n".join(lines) + "\n")
    proc = start_server(toml, tmp / "server.log")
    try:
        await run(args, proc.pid, [port], ServerCPU([proc.pid], tmp / "state" / "pg"))
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


async def run(args: argparse.Namespace, pid: int, ports: list[int], cpu: ServerCPU) -> None:
    sem = asyncio.Semaphore(20)
    rss0 = rss_kb(pid)

    async def one(i: int) -> Member:
        async with sem:
            conn = await login(ports[i % len(ports)], f"m{i:04d}")
            await join(conn, f"m{i:04d}")
            return Member(conn)

    t0 = time.perf_counter()
    first = await one(0)  # alone: its node is the room's home
    members = [first, *await asyncio.gather(*(one(i) for i in range(1, args.members)))]
    print(f"{len(members)} members logged in and joined in {time.perf_counter() - t0:.1f}s; "
          f"server RSS {rss0 / 1024:.0f} → {rss_kb(pid) / 1024:.0f} MiB", flush=True)
    readers = [asyncio.ensure_future(m.read()) for m in members]
    await asyncio.sleep(0.5)
    sender = members[1 if len(ports) > 1 else 0]

    def send(n: int) -> bytes:
        return (f"<message to='{ROOM}' type='groupchat'><body>m{n}</body></message>").encode()

    async def until_all(n: int) -> float:
        for m in members:
            m.want = n
            if max(m.seen, default=-1) >= n:
                m.got.set()
            else:
                m.got.clear()
        await asyncio.wait_for(asyncio.gather(*(m.got.wait() for m in members)), 60)
        return max(m.seen[n] for m in members)

    # -- one message at a time ----------------------------------------------------------------
    lat = []
    for n in range(args.rounds):
        t = time.perf_counter()
        sender.conn.writer.write(send(n))
        last = await until_all(n)
        lat.append(last - t)
        await asyncio.sleep(0.02)
    ms = [x * 1000 for x in lat]
    print(f"fan-out to {len(members)}: all members have the message after "
          f"median {pct(ms, 0.5):.2f} ms, p95 {pct(ms, 0.95):.2f} ms, max {max(ms):.2f} ms "
          f"({args.rounds} rounds)", flush=True)

    # -- a burst -------------------------------------------------------------------------------
    base = args.rounds
    cpu0 = cpu.sample()
    t = time.perf_counter()
    sender.conn.writer.write(b"".join(send(base + k) for k in range(args.burst)))
    last_n = base + args.burst - 1
    await until_all(last_n)
    missing = sum(1 for m in members for k in range(args.burst) if base + k not in m.seen)
    dt = time.perf_counter() - t
    await asyncio.sleep(1.0)  # write-behind (history, archive) finishes: counted too
    used = cpu.sample() - cpu0
    deliveries = args.burst * len(members)
    print(f"burst of {args.burst} messages: {deliveries:,} deliveries in {dt * 1000:.0f} ms "
          f"= {deliveries / dt:,.0f} deliveries/s, {missing} missing", flush=True)
    print(describe(used, args.burst, dt + 1.0, "message"), flush=True)
    print(f"CPU per delivery: server {used.server / deliveries * 1e6:.2f} µs + PostgreSQL "
          f"{used.database / deliveries * 1e6:.2f} µs", flush=True)
    for r in readers:
        r.cancel()
    for m in members:
        m.conn.writer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--burst", type=int, default=100)
    ap.add_argument("--nodes", type=int, choices=(1, 2), default=1)
    try:
        import uvloop
        uvloop.run(main_async(ap.parse_args()))
    except ImportError:
        asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
