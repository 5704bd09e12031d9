"""IMAP sync cost (issue 17 item 5): server + PostgreSQL CPU and database round trips per
"log in over IMAPS, SELECT INBOX, log out", the workday's IMAP part.

Starts `cxgw serve` (imaps only) on a fresh state directory, adds one account, seeds its
INBOX with --messages messages through SQL, then:
  1. CPU per sync (rule 16: our process plus every PostgreSQL process): --syncs syncs on
     --conns parallel clients, each a fresh TLS connection, LOGIN (a cached success after
     the first, as for a client syncing every few minutes), SELECT INBOX, LOGOUT;
  2. queries per sync: the same LOGIN and SELECT through the server's own Authenticator and
     PgMailStore on a pool whose connections log every statement they send
     (asyncpg's query logger: BEGIN and COMMIT count), for a cached login and for a
     login that checks the password.

    .venv/bin/python benchmarks/login_bench.py [--syncs 600] [--conns 4] [--messages 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import tempfile
from pathlib import Path
from typing import Any

import asyncpg
from cpu import ServerCPU
from imap_bench import PASSWORD, USER, seed
from serverproc import ROOT, cli, start

sys.path.insert(0, str(ROOT))

DOMAIN = "bench.example"


async def sync(port: int, ctx: ssl.SSLContext) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        await r.readline()
        for tag, text in ((b"a", b"LOGIN " + USER.encode() + b' "' + PASSWORD.encode() + b'"'),
                          (b"b", b"SELECT INBOX"), (b"c", b"LOGOUT")):
            w.write(tag + b" " + text + b"\r\n")
            while True:
                line = await r.readline()
                if not line:
                    raise ConnectionError("closed")
                if line.startswith(tag + b" "):
                    if not line.startswith(tag + b" OK"):
                        raise RuntimeError(line.decode(errors="replace"))
                    break
    finally:
        w.close()


async def cpu_per_sync(port: int, cpu: ServerCPU, syncs: int, conns: int) -> dict[str, float]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for _ in range(20):  # warm up: the auth cache, the pool, prepared statements
        await sync(port, ctx)
    left = syncs

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await sync(port, ctx)
    before = cpu.sample()
    await asyncio.gather(*(client() for _ in range(conns)))
    used = cpu.sample() - before
    return {"cpu_ms_per_sync": round(1000 * used.total / syncs, 3),
            "server_cpu_ms_per_sync": round(1000 * used.server / syncs, 3),
            "postgres_cpu_ms_per_sync": round(1000 * used.database / syncs, 3)}


async def queries_per_sync(url: str) -> dict[str, int]:
    """Statements one LOGIN + SELECT sends, through the server's own code paths."""
    from directory.auth import Authenticator
    from directory.service import DirectorySettings
    from mailrelay.imap.pgstore import PgMailStore

    sent: list[str] = []

    # the server's own pool settings (gateway.db), each connection logging what it sends
    from gateway import db
    opts: dict[str, Any] = db.pool_options() if hasattr(db, "pool_options") else {}
    server_init = opts.pop("init", None)

    async def init(conn: asyncpg.Connection) -> None:
        if server_init is not None:
            await server_init(conn)
        conn.add_query_logger(lambda rec: sent.append(rec.query))
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2, init=init, **opts)
    try:
        auth = Authenticator(pool, DirectorySettings(domain=DOMAIN))
        store = PgMailStore(pool)
        res: dict[str, int] = {}
        for label in ("checked", "cached"):  # the first login checks, the second is cached
            sent.clear()
            ok = await auth.authenticate(USER, PASSWORD, protocol="imap", remote="127.0.0.1")
            assert ok.ok, ok
            res[f"login_{label}_queries"] = len(sent)
        sent.clear()
        await store.select(USER, "INBOX", False)
        await store.select(USER, "INBOX", False)  # the account id is cached after the first
        sent.clear()
        await store.select(USER, "INBOX", False)
        res["select_queries"] = len(sent)
        return res
    finally:
        await pool.close()


async def main_async(args: argparse.Namespace, state: Path) -> dict[str, object]:
    proc, ports = start(state, ("imaps",), server_toml=f'domain = "{DOMAIN}"\n')
    try:
        cli(state, "unit", "add", "bench", "--name", "Bench")
        cli(state, "user", "add", USER, "--unit", "bench", "--name", "Bench",
            "--password-stdin", stdin=PASSWORD + "\n")
        url = f"postgresql://postgres:@/cxgw?host={state / 'var' / 'pg'}"
        await seed(url, args.messages)
        cpu = ServerCPU([proc.pid], state / "var" / "pg")
        res: dict[str, object] = {"messages": args.messages, "syncs": args.syncs}
        res.update(await cpu_per_sync(ports["imaps"], cpu, args.syncs, args.conns))
        res.update(await queries_per_sync(url))
        return res
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--syncs", type=int, default=600)
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cxgw-login-bench-") as tmp:
        res = asyncio.run(main_async(args, Path(tmp)))
    for k, v in res.items():
        print(f"{k:28} {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
