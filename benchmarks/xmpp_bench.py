"""XMPP benchmark (not a test): routing rate, latency, logins, memory per session.

    .venv/bin/python benchmarks/xmpp_bench.py [--pairs 50] [--window 50] [--seconds 10]
        [--logins 200] [--sessions 1000[,10000]] [--like-a-client] [--peer prosody]
        [--archive always|never] [--full-jid]

``--peer prosody`` runs the same load against Debian's Prosody (apt-get install prosody
lua-dbi-sqlite3; internal_plain accounts, STARTTLS, SCRAM-SHA-1, limits module off) for a
side-by-side. Like for like (rule 16): ``--archive always`` (our shipped default) archives
every chat message in PostgreSQL, and Prosody then runs ``mod_mam`` with SQL storage in its
own embedded PostgreSQL (apt-get install lua-dbi-postgresql; ``--prosody-sqlite`` for
SQLite) and ``default_archive_policy = true``, its PostgreSQL's CPU counted as ours is;
``--archive never`` turns archiving off on both sides. Nagle is off on both sides (we set TCP_NODELAY; Prosody gets
``network_settings = { nagle = false }``), and the clients set it too (asyncio does).
Clients send initial presence and address their partner's bare JID (the server picks the
resource, as for real clients); ``--full-jid`` addresses the full JID instead.

Starts `cxgw serve` as a separate process (uvloop, embedded PostgreSQL in a temporary
state dir), seeds the directory, and drives it with a lean raw client: the sans-IO
``xmpp.proto.client.ClientSession`` for STARTTLS + SCRAM-SHA-256 + bind, then
pre-serialised stanzas and a byte scan on the receiving side (slixmpp would be the
bottleneck). Server CPU is the whole server: our process plus every PostgreSQL process of
its cluster (benchmarks/cpu.py); for Prosody its process (SQLite runs inside it). Memory
is the server process's VmRSS.

Routing: each pair A↔B keeps `window` chat messages in flight: every message received is
answered with one to the partner, so the load is closed-loop; msg/s counts deliveries.

Memory: sessions are logged in (20 at a time) and held idle; RSS is read one second after
the last login, at each count of ``--sessions`` (e.g. ``1000,10000`` measures both in one
run). ``--like-a-client`` makes each session fetch its roster and send initial presence
first, as real clients do (its unit has 100 members, so the roster is ~10 KB).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu import ServerCPU, describe  # noqa: E402
from prosody_conf import prosody_config  # noqa: E402

from cxkernel.config import from_dict  # noqa: E402
from xmpp.jid import JID  # noqa: E402
from xmpp.proto.client import ClientSession  # noqa: E402
from xmpp.proto.events import AuthFailed, SessionBound, StartTLSRequested, StreamEnded  # noqa: E402

DOMAIN = "bench.example"
PEER_DOMAIN = "peer.example"
TARGET = {"domain": DOMAIN, "mechanisms": ("SCRAM-SHA-256",)}
PASSWORD = "Bench-pass-2024"
CLOCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """CPU seconds of one process (muc_bench); the whole server's: `ServerCPU`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK  # utime + stime


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _client_ctx() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the benchmark server's certificate is self-signed
    return ctx


CLIENT_CTX = _client_ctx()


def client_ctx() -> ssl.SSLContext:
    return CLIENT_CTX


class Conn:
    """A logged-in raw client connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 jid: str) -> None:
        self.reader, self.writer, self.jid = reader, writer, jid


async def login(port: int, user: str, resource: str = "b", presence: bool = False) -> Conn:
    """STARTTLS, SCRAM-SHA-256, bind, with the sans-IO client core."""
    session = ClientSession(JID(user, TARGET["domain"], resource), PASSWORD,  # type: ignore[arg-type]
                            mechanisms=TARGET["mechanisms"],  # type: ignore[arg-type]
                            new_nonce=lambda: secrets.token_urlsafe(18))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    session.start()
    writer.write(session.data_to_send())
    while True:
        data = await reader.read(65536)
        session.receive_data(data)
        while (ev := session.next_event()) is not None:
            if isinstance(ev, StartTLSRequested):
                await writer.drain()
                await writer.start_tls(client_ctx())
                session.tls_started()
            elif isinstance(ev, SessionBound):
                writer.write(session.data_to_send() + (b"<presence/>" if presence else b""))
                return Conn(reader, writer, str(ev.jid))
            elif isinstance(ev, AuthFailed):
                raise RuntimeError(f"login of {user} failed: {ev}")
            elif isinstance(ev, StreamEnded):
                raise RuntimeError(f"login of {user} failed: {ev}")
        out = session.data_to_send()
        if out:
            writer.write(out)
        if not data:
            raise RuntimeError("connection closed during login")


BODY = re.compile(rb"<body>([0-9.]+)</body>")


async def pair_loop(me: Conn, peer: str, window: int, stop: asyncio.Event,
                    lat: list[float], count: list[int], sm: bool = False) -> None:
    """Send `window` messages, then answer every message received with a new one.
    With `sm` (the connection enabled XEP-0198), each batch of replies carries an
    acknowledgement of the messages handled so far."""
    handled = 0
    head = f"<message to='{peer}' type='chat'><body>".encode()
    tail = b"</body></message>"

    def msg() -> bytes:
        return head + f"{time.perf_counter():.6f}".encode() + tail

    me.writer.write(b"".join(msg() for _ in range(window)))
    buf = b""
    while not stop.is_set():
        data = await me.reader.read(65536)
        if not data:
            return
        buf += data
        end = buf.rfind(b"</message>")
        if end < 0:
            continue
        chunk, buf = buf[:end + 10], buf[end + 10:]
        now = time.perf_counter()
        stamps = BODY.findall(chunk)
        count[0] += len(stamps)
        if len(lat) < 2_000_000:
            lat.extend(now - float(s) for s in stamps)
        if not stop.is_set():
            out = b"".join(msg() for _ in stamps)
            if sm:  # h counts messages only: never too high (presence goes unacked)
                handled += chunk.count(b"</message>")
                out += f"<a xmlns='urn:xmpp:sm:3' h='{handled}'/>".encode()
            me.writer.write(out)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))] if s else float("nan")


async def seed(cfg_data: dict[str, dict[str, Any]], users: list[tuple[str, str]], units: set[str]) -> None:
    from gateway.app import open_services
    services = await open_services(from_dict(cfg_data))
    try:
        for unit in sorted(units):
            await services.directory.add_unit(unit, f"基准测试{unit}")
        sem = asyncio.Semaphore(4)

        async def add(user: str, unit: str) -> None:
            async with sem:
                await services.directory.add_user(user, unit, f"用户{user}", password=PASSWORD)

        await asyncio.gather(*(add(u, unit) for u, unit in users))
    finally:
        await services.db.close()


def start_prosody(tmp: Path, users: list[str], port: int, archive: bool,
                  pgdata: Path | None) -> subprocess.Popen[bytes]:
    """Debian's Prosody on 127.0.0.1:`port` with `users` (password PASSWORD); `archive`
    turns on mod_mam with SQL storage (PostgreSQL at `pgdata`, else SQLite)."""
    from gateway.tls import ensure_self_signed
    d = tmp / "prosody"
    acc = d / "data" / PEER_DOMAIN.replace(".", "%2e") / "accounts"
    acc.mkdir(parents=True)
    crt, key = ensure_self_signed(d, PEER_DOMAIN, PEER_DOMAIN)
    for u in users:
        (acc / f"{u}.dat").write_text(f'return {{\n\t["password"] = "{PASSWORD}";\n}};\n')
    subprocess.run(["chown", "-R", "prosody:prosody", str(d)], check=True)
    conf = d / "prosody.cfg.lua"
    conf.write_text(prosody_config(d, port, PEER_DOMAIN, key, crt, nagle=False, mam=archive,
                                   pg_socket_dir=pgdata))
    proc = subprocess.Popen(["prosody", "--config", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc


async def prosody_database(pgdata: Path) -> Any:
    """An embedded PostgreSQL (the same pgserver we ship) with an empty `prosody` database."""
    import asyncpg

    from gateway.db import EmbeddedPostgres
    pg = EmbeddedPostgres(pgdata)
    uri = await asyncio.to_thread(pg.start)
    conn = await asyncpg.connect(uri)
    try:
        await conn.execute("create database prosody")
    finally:
        await conn.close()
    return pg


def start_server(toml: Path, log_path: Path) -> subprocess.Popen[str]:
    """`cxgw serve` in its own process; returns once it printed `cxgw ready`."""
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(toml),
                                 "serve"], stdout=subprocess.PIPE, stderr=log, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("cxgw ready"):
            break
    return proc


async def main_async(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cxbench"))
    port, sport = free_port(), free_port()
    cfg_data: dict[str, dict[str, Any]] = {
        "server": {"domain": DOMAIN, "state_dir": str(tmp / "state")},
        "listen": {k: "" for k in ("smtp", "submission", "submissions", "imap", "imaps",
                                   "http")} | {"xmpp": f"127.0.0.1:{port}",
                                               "xmpps": f"127.0.0.1:{sport}"},
        "xmpp": {"rate_bytes_per_s": 100_000_000, "archive_default": args.archive},
    }
    npairs = args.pairs
    users = [(f"p{i:04d}", f"pair{i // 2:03d}") for i in range(2 * npairs)]
    users += [(f"s{i:05d}", f"sess{i // 100:03d}") for i in range(max(args.sessions, default=0))]
    if args.peer == "prosody":
        TARGET["domain"] = PEER_DOMAIN
        TARGET["mechanisms"] = ("SCRAM-SHA-1", "PLAIN")
        archive = args.archive == "always"
        pg = None
        if archive and not args.prosody_sqlite:
            pg = await prosody_database(tmp / "ppg")
        peer = start_prosody(tmp, [u for u, _ in users], port, archive,
                             pg.pgdata if pg else None)
        try:
            store = ("PostgreSQL" if pg else "SQLite") if archive else ""
            print(f"peer: prosody pid {peer.pid}, mod_mam "
                  f"{f'on (SQL storage: {store})' if archive else 'off'}, nagle off", flush=True)
            await run_benchmarks(args, ServerCPU([peer.pid], pg.pgdata if pg else None),
                                 peer.pid, port)
        finally:
            peer.terminate()
            peer.wait(30)
            if pg:
                pg.stop()
            shutil.rmtree(tmp, ignore_errors=True)
        return
    print(f"seeding {len(users)} accounts ...", flush=True)
    t0 = time.perf_counter()
    await seed(cfg_data, users, {u for _, u in users})
    print(f"seeded in {time.perf_counter() - t0:.1f}s", flush=True)
    toml = tmp / "cxgw.toml"
    lines = []
    for section, values in cfg_data.items():
        lines.append(f"[{section}]")
        for k, v in values.items():
            lines.append(f"{k} = {v!r}".replace("'", '"') if isinstance(v, str)
                         else f"{k} = {v}")
    toml.write_text("\n".join(lines) + "\n")
    proc = start_server(toml, tmp / "server.log")
    try:
        pid = proc.pid
        await asyncio.sleep(0.5)
        print(f"cxgw pid {pid}, archive_default = {args.archive!r}, TCP_NODELAY on", flush=True)
        await run_benchmarks(args, ServerCPU([pid], tmp / "state" / "pg"), pid, port)
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


async def run_benchmarks(args: argparse.Namespace, cpu: ServerCPU, pid: int, port: int) -> None:
    # -- logins ---------------------------------------------------------------------------
    n = args.logins
    sem = asyncio.Semaphore(10)

    async def one(i: int) -> None:
        async with sem:
            c = await login(port, f"p{i % (2 * args.pairs):04d}", f"l{i}")
            c.writer.write(b"</stream:stream>")
            c.writer.close()

    s0, t0 = cpu.sample(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall, used = time.perf_counter() - t0, cpu.sample() - s0
    print(f"logins: {n} STARTTLS+{TARGET['mechanisms'][0]}+bind in {wall:.2f}s = {n / wall:,.0f}/s, "
          f"{describe(used, n, wall, 'login')}", flush=True)
    await asyncio.sleep(1)

    # -- routing ----------------------------------------------------------------------------
    conns = [await login(port, f"p{i:04d}", presence=not args.full_jid)
             for i in range(2 * args.pairs)]
    await asyncio.sleep(0.5)  # presence settles before the first message to a bare JID
    stop = asyncio.Event()
    lat: list[float] = []
    count = [0]
    target = [c.jid if args.full_jid else c.jid.split("/", 1)[0] for c in conns]
    tasks = [asyncio.create_task(pair_loop(conns[i], target[i ^ 1], args.window, stop,
                                           lat, count)) for i in range(len(conns))]
    await asyncio.sleep(2)  # warm-up
    lat.clear()
    c0, s0, t0 = count[0], cpu.sample(), time.perf_counter()
    await asyncio.sleep(args.seconds)
    c1, used, t1 = count[0], cpu.sample() - s0, time.perf_counter()
    stop.set()
    msgs = max(c1 - c0, 1)
    print(f"routing: {args.pairs} pairs x {args.window} in flight (x2 directions), to "
          f"{'full' if args.full_jid else 'bare'} JIDs, archive {args.archive}: "
          f"{msgs / (t1 - t0):,.0f} msg/s, {describe(used, msgs, t1 - t0)}, "
          f"latency p50 {pct(lat, .5) * 1000:.2f} ms p99 {pct(lat, .99) * 1000:.2f} ms",
          flush=True)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in conns:
        c.writer.close()
    await asyncio.sleep(1)

    # -- memory per session -------------------------------------------------------------------
    if args.sessions:
        rss0 = rss_kb(pid)
        held: list[Conn] = []
        sem = asyncio.Semaphore(20)

        async def hold(i: int) -> None:
            async with sem:
                conn = await login(port, f"s{i:05d}")
                if args.like_a_client:
                    await act_like_a_client(conn)
                held.append(conn)

        for count in args.sessions:
            await asyncio.gather(*(hold(i) for i in range(len(held), count)))
            await asyncio.sleep(1)
            rss1 = rss_kb(pid)
            per = (rss1 - rss0) / count
            print(f"memory: {count} bound TLS sessions{' (roster + presence)' if args.like_a_client else ''}: "
                  f"server RSS {rss0 / 1024:.1f} → {rss1 / 1024:.1f} MiB, {per:.1f} KiB "
                  f"({per * 1.024:.1f} KB) per session", flush=True)
        for c in held:
            c.writer.close()


async def act_like_a_client(conn: Conn) -> None:
    """Roster get and initial presence; returns once the roster result arrived."""
    conn.writer.write(b"<iq type='get' id='roster1'><query xmlns='jabber:iq:roster'/></iq>"
                      b"<presence/>")
    buf = b""
    while b"id='roster1'" not in buf and b'id="roster1"' not in buf:
        data = await conn.reader.read(65536)
        if not data:
            raise RuntimeError("closed while waiting for the roster")
        buf = buf[-64:] + data


def sessions_arg(text: str) -> list[int]:
    counts = [int(x) for x in text.split(",") if x and int(x) > 0]
    if counts != sorted(counts):
        raise argparse.ArgumentTypeError("--sessions counts must increase")
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=50)
    p.add_argument("--window", type=int, default=50)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--logins", type=int, default=200)
    p.add_argument("--sessions", type=sessions_arg, default=[1000],
                   help="idle sessions to measure memory at, e.g. 1000,10000 (0: skip)")
    p.add_argument("--like-a-client", action="store_true",
                   help="idle sessions fetch their roster and send presence first")
    p.add_argument("--peer", choices=["prosody"], help="measure Prosody instead of cx-gateway")
    p.add_argument("--archive", choices=["always", "never"], default="always",
                   help="always (our default; Prosody with mod_mam on SQL) or never (both off)")
    p.add_argument("--prosody-sqlite", action="store_true",
                   help="Prosody's archive in SQLite instead of PostgreSQL")
    p.add_argument("--full-jid", action="store_true",
                   help="address full JIDs without presence (the cheapest routing path)")
    args = p.parse_args()
    try:
        import uvloop
        uvloop.run(main_async(args))
    except ImportError:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
