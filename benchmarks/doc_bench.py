"""Official documents benchmark, like for like (issue 17 item 4; a benchmark, not a test).

One command, in one process (the gateway's own components, real PostgreSQL from
pgserver in a temporary directory, the server running with its scheduler and docs
handler), RSA-2048 unit seals (the default `ca.key_type`), a 100 KB attachment:

  1. **bare signing at concurrency N**: cryptography's PKCS7SignatureBuilder (SHA-256,
     detached, DER) over the same document entity with the same seal key, back to back
     in each of the N seal worker processes the gateway uses (N = --workers, default one
     per CPU). Also shown: one thread, and N threads in one process (cryptography's
     RSA signing does not release the GIL: it calls OpenSSL without allow_threads);
  2. **the full gateway path**: `DocumentService.send` from --concurrency senders (seal in
     the N-process pool: one MIME build, sign, wrap), verified (S/MIME, chain,
     revocation, metadata: the docs handler's `examine` and per-unit checks), stamped
     and stored once into every clerk's INBOX with the document rows (group commit of
     concurrent sends; `mailrelay.documents.ownsend`); timed until the last
     `document_recipients` row is `delivered`. Ratio = 2 / 1. Also per document: the
     statements sent to PostgreSQL, WAL bytes, bytes added to `messages`, and the seal
     workers' share of the CPU. ``--compare`` first runs the same with every document
     queued to the running server's docs handler (the path before issue 17: stored as
     sealed, then the stamped copy), in the same run;
  3. **verification per core** (`arrival.examine`: S/MIME + chain + revocation + the
     document's metadata + the rebuilt, stamped copy), CPU seconds of one thread:
     *warm*: the server's TrustStore as in production (path cached per signer,
     revocation answers cached for 10 minutes); *cold*: every message with an empty
     path cache, empty certificate caches and an uncached revocation check (our OCSP
     responder's signed answer built and read back, as the server does on a miss);
  4. whole-server CPU per document of step 2: this process and its seal workers, plus
     every PostgreSQL process (benchmarks/cpu.py); the senders run in this process too,
     so the server figure includes the load generator (an overstatement).

    .venv/bin/python benchmarks/doc_bench.py [--count 400] [--workers N]
        [--concurrency 16] [--seconds 3] [--compare] [--queries] [--json out.json]

Figures: `benchmarks/README.md` (one table, quiet machine); this docstring keeps none,
so that no stale figure outlives a re-run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.serialization import pkcs7  # noqa: E402

from benchmarks.cpu import Sample, postmaster_pid  # noqa: E402
from cxkernel.config import ListenConfig, from_dict  # noqa: E402
from directory import demo  # noqa: E402
from mailrelay.documents import mimeparts, verify  # noqa: E402
from mailrelay.documents.arrival import examine  # noqa: E402
from mailrelay.documents.chain import VerifyCache  # noqa: E402
from mailrelay.documents.docmime import Attachment, DocumentMeta  # noqa: E402
from mailrelay.documents.revocation import CachedRevocation  # noqa: E402
from mailrelay.documents.seal import prepare_document, seal_prepared  # noqa: E402
from mailrelay.documents.sealpool import sign_loop  # noqa: E402

PASSPHRASE = "Bench-passphrase-2026"
DOC_SIZE = 100 * 1024


def attachment() -> Attachment:
    return Attachment("正文.pdf", os.urandom(DOC_SIZE), "application/pdf")


def bare_threads(key: Any, cert: Any, entity: bytes, threads: int, seconds: float) -> float:
    """Detached CMS signatures per second from `threads` threads of this process."""
    opts = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    stop = time.perf_counter() + seconds
    counts = [0] * threads

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            pkcs7.PKCS7SignatureBuilder().set_data(entity).add_signer(
                cert, key, hashes.SHA256()).sign(serialization.Encoding.DER, opts)
            counts[i] += 1
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(loop, range(threads)))
    return sum(counts) / (time.perf_counter() - t0)


class WholeServer:
    """CPU seconds of this process with its descendants (the seal workers), and of the
    PostgreSQL cluster (postmaster, live backends, reaped backends)."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self.workers = 0.0

    def sample(self) -> Sample:
        pm = postmaster_pid(self.pgdata)
        me = psutil.Process()
        t = me.cpu_times()
        server = t.user + t.system
        db = 0.0
        self.workers = 0.0  # of which the seal workers (and other children)
        for child in me.children(recursive=True):
            try:
                ct = child.cpu_times()
                if child.pid == pm or pm in [p.pid for p in child.parents()]:
                    continue  # counted below, with the cluster
                server += ct.user + ct.system
                self.workers += ct.user + ct.system
            except psutil.Error:
                continue
        try:
            root = psutil.Process(pm)
            rt = root.cpu_times()
            db = rt.user + rt.system + rt.children_user + rt.children_system
            for c in root.children(recursive=True):
                try:
                    ct = c.cpu_times()
                    db += ct.user + ct.system
                except psutil.Error:
                    continue
        except psutil.Error:
            pass
        return Sample(server, db)


class QueryCount:
    """Statements sent to PostgreSQL by every asyncpg connection of this process (the
    public methods of Connection, as the pool's proxies call them; BEGIN and COMMIT
    are statements too), by their first words (``--queries`` prints the breakdown)."""

    METHODS = ("execute", "executemany", "fetch", "fetchrow", "fetchval",
               "copy_records_to_table", "copy_to_table", "copy_from_query")

    def __init__(self) -> None:
        from collections import Counter
        self.by_kind: Counter[str] = Counter()
        self.on = False
        cls = asyncpg.connection.Connection
        for name in self.METHODS:
            orig = getattr(cls, name)
            setattr(cls, name, self._wrap(name, orig))

    def _wrap(self, name: str, orig: Any) -> Any:
        counter = self

        async def counted(conn: Any, *args: Any, **kw: Any) -> Any:
            if counter.on:
                if name.startswith("copy"):
                    kind = f"COPY {args[0] if args else kw.get('table_name', '')}"
                else:
                    q = str(args[0]) if args else ""
                    kind = " ".join(q.split()[:4])[:60]
                counter.by_kind[kind] += 1
            return await orig(conn, *args, **kw)
        return counted

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


async def wal_and_messages(pool: Any) -> tuple[int, int]:
    """(WAL bytes written so far, bytes of the messages table with its TOAST)."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "select pg_current_wal_lsn() - '0/0'::pg_lsn as wal,"
            " pg_total_relation_size('messages') as msgs")
        return int(row["wal"]), int(row["msgs"])


async def delivered_rows(pool: Any, state: str = "delivered") -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval(
            "select count(*) from document_recipients where state = $1", state))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from gateway.app import RunningServer, open_services
    from gateway.cli.common import run_async  # noqa: F401  (uvloop policy, like the server)
    from mailrelay.documents.service import DocumentService
    from mailrelay.service import build

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    tmp = Path(tempfile.mkdtemp(prefix="cxdocbench"))
    pg = pgserver.get_server(tmp / "pg", cleanup_mode="stop")
    try:
        admin = await asyncpg.connect(pg.get_uri())
        await admin.execute("create database docbench")
        await admin.close()
        base, _, query = pg.get_uri().partition("?")
        url = base.rsplit("/", 1)[0] + "/docbench" + ("?" + query if query else "")
        listen = {f.name: "" for f in dataclasses.fields(ListenConfig)}  # all off but http
        listen["http"] = "127.0.0.1:0"
        cfg = from_dict({"server": {"domain": "cx.example", "state_dir": str(tmp / "state"),
                                    "log_level": "warning"},
                         "database": {"url": url, "pool_max": 30}, "listen": listen,
                         "ca": {"passphrase": PASSPHRASE}})
        services = await open_services(cfg)
        args.cpu = WholeServer(tmp / "pg")
        args.queries = QueryCount()
        try:
            return await _bench(services, cfg, args, RunningServer, DocumentService, build)
        finally:
            await services.db.close()
    finally:
        pg.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


async def _bench(services: Any, cfg: Any, args: argparse.Namespace, RunningServer: Any,
                 DocumentService: Any, build: Any) -> dict[str, Any]:
    from directory.certs import CertificateService

    await demo.seed(services.directory, count=200)
    certs = CertificateService.from_config(cfg, services.db.pool)
    await certs.init_ca()
    for unit in ("gov-office", "finance"):
        await certs.issue_seal(unit)
    server = RunningServer(services)
    await server.start()
    try:
        return await _measure(services, args, server)
    finally:
        await server.stop()


async def _measure(services: Any, args: argparse.Namespace, server: Any) -> dict[str, Any]:
    docs = services.components["docs"]  # the server's own DocumentService
    if args.workers:
        docs.close()
        from mailrelay.documents.sealpool import SealPool
        docs.sealer = SealPool(args.workers)
    pool = docs.sealer
    workers = pool.workers
    out: dict[str, Any] = {
        "machine": f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at start",
        "key": "RSA-2048 unit seal", "doc_size": DOC_SIZE, "count": args.count,
        "seal_workers": workers, "senders": args.concurrency}
    att = attachment()
    signer = await docs.signer("finance")
    meta = DocumentMeta(DocumentMeta.new_id(), "楚财发〔2026〕1号", "基准测试", "finance", ("stats",))
    entity = prepare_document(meta, "", [att], from_addr="finance.docs@cx.example",
                              to_addrs=["stats.docs@cx.example"], now=datetime.now(UTC),
                              domain="cx.example").entity
    step("starting the seal workers")
    await pool.start()

    step(f"bare signing in {workers} workers")
    # 1. bare signing: N seal workers, same key, same entity; and threads of one process
    ref = pool.key_ref(signer)
    start_at = time.time() + 0.3
    counts = await asyncio.gather(*(pool.run(sign_loop, ref, entity, start_at, args.seconds)
                                    for _ in range(workers)))
    out["bare_sign_per_s_at_N"] = sum(counts) / args.seconds
    out["bare_sign_per_s_1_thread"] = await asyncio.to_thread(
        bare_threads, signer.key, signer.certificate, entity, 1, args.seconds)
    out[f"bare_sign_per_s_{workers}_threads"] = await asyncio.to_thread(
        bare_threads, signer.key, signer.certificate, entity, workers, args.seconds)
    # Threads are measured for reference only: on a loaded machine they say little. The
    # source does: pyca/cryptography's RSAPrivateKey.sign (src/rust/src/backend/rsa.rs)
    # calls OpenSSL without py.allow_threads, so signing holds the GIL.
    out["signing_releases_gil"] = "no (cryptography rsa.rs sign: no allow_threads)"

    # 2. the full path: send -> seal (N processes) -> store -> deliver -> verify -> stamp
    delivered = 0
    if args.compare:  # the same, every document through the queue to the docs handler
        step(f"full path through the queue: {args.count} documents from "
             f"{args.concurrency} senders")
        docs.deliver_inline = False
        delivered = await full_path(services, docs, args, att, out, delivered, "_queued")
        docs.deliver_inline = True
    step(f"full path: {args.count} documents from {args.concurrency} senders")
    delivered = await full_path(services, docs, args, att, out, delivered, "")
    total = delivered

    step("verification per core, warm and cold")
    # 3. verification per core, one thread, CPU seconds
    # A document as it arrives (sealed as `doc send` seals it; the stored copy of a
    # document verified while sent is the clerks' stamped copy, not the arrival).
    raw = seal_prepared(meta, "", [att], signer, from_addr="finance.docs@cx.example",
                        to_addrs=["stats.docs@cx.example"], now=datetime.now(UTC),
                        domain="cx.example").raw
    await docs.trust.refresh()
    (out["verify_warm_per_core_s"], out["verify_cold_per_core_s"],
     out["seal_check_only_warm_per_core_s"]) = await asyncio.to_thread(
        verify_rates, raw, docs.trust, args.seconds)

    step("a circular to every unit")
    # 4. a circular to all 93 units, until verified in every clerk's INBOX
    t0 = time.perf_counter()
    sent = await docs.send(from_unit="gov-office", to=["all"], title="关于春节值班的通知",
                           number="楚政办电〔2026〕1号", attachments=[att])
    while await delivered_rows(services.db.pool) < total + len(sent.units):
        if time.perf_counter() - t0 > 300:
            raise SystemExit("circular not delivered in 5 minutes")
        await asyncio.sleep(0.01)
    out["circular_units"] = len(sent.units)
    out["circular_all_inboxes_s"] = time.perf_counter() - t0
    return out


async def full_path(services: Any, docs: Any, args: argparse.Namespace, att: Attachment,
                    out: dict[str, Any], base: int, suffix: str) -> int:
    """Step 2, figures into ``out`` with ``suffix``; returns the delivered rows now."""
    t_warm = time.perf_counter()
    await docs.send(from_unit="finance", to=["stats"], title="warm-up", number="0",
                    attachments=[att])
    base += 1
    while await delivered_rows(services.db.pool) < base:
        if time.perf_counter() - t_warm > 60:
            raise SystemExit("the warm-up document was not delivered in a minute")
        await asyncio.sleep(0.02)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(args.count):
        queue.put_nowait(i)

    async def sender() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            await docs.send(from_unit="finance", to=["stats"], title=f"基准测试 {i}",
                            number=f"楚财发〔2026〕{i}{suffix}号", attachments=[att])
    prof = None
    if args.profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    wal0, msgs0 = await wal_and_messages(services.db.pool)
    args.queries.by_kind.clear()
    args.queries.on = True
    c0 = args.cpu.sample()
    w0 = args.cpu.workers
    docs.sealed_in_pool = 0
    t0 = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(args.concurrency)))
    t_sent = time.perf_counter() - t0
    total = base + args.count
    while await delivered_rows(services.db.pool) < total:
        if time.perf_counter() - t0 > 900:
            raise SystemExit("documents not delivered in 15 minutes")
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - t0
    d = args.cpu.sample() - c0
    w1 = args.cpu.workers
    args.queries.on = False
    wal1, msgs1 = await wal_and_messages(services.db.pool)
    if prof is not None:
        import pstats
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
    out["sealed_in_pool" + suffix] = docs.sealed_in_pool  # the others: alone, in a thread
    out["sent_until_commit_per_s" + suffix] = args.count / t_sent
    out["full_path_per_s" + suffix] = args.count / elapsed
    out["full_path_vs_bare_at_N" + suffix] = (out["full_path_per_s" + suffix]
                                              / out["bare_sign_per_s_at_N"])
    out["cpu_ms_per_doc_server" + suffix] = d.server / args.count * 1000
    out["cpu_ms_per_doc_seal_workers" + suffix] = (w1 - w0) / args.count * 1000
    out["cpu_ms_per_doc_postgres" + suffix] = d.database / args.count * 1000
    out["cpu_ms_per_doc_total" + suffix] = d.total / args.count * 1000
    out["cpu_cores_busy" + suffix] = d.total / elapsed
    # The benchmark's own polling (one count per 5 ms) is left out of the statements.
    polls = sum(n for k, n in args.queries.by_kind.items()
                if k.startswith("select count(*) from document_recipients"))
    out["queries_per_doc" + suffix] = (args.queries.total - polls) / args.count
    out["wal_kb_per_doc" + suffix] = (wal1 - wal0) / args.count / 1024
    out["messages_kb_per_doc" + suffix] = (msgs1 - msgs0) / args.count / 1024
    if args.queries_detail:
        print(f"statements per document{suffix or ' (default path)'}:", file=sys.stderr)
        for kind, n in args.queries.by_kind.most_common():
            if n >= args.count // 20:
                print(f"{n / args.count:8.2f}  {kind}", file=sys.stderr)
    return total


def step(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def verify_rates(raw: bytes, tr: Any, seconds: float) -> tuple[float, float, float]:
    """(warm, cold) `examine` per CPU second of this thread, and `verify_message` alone
    (S/MIME, cached chain, cached revocation; no metadata, no rebuilt copy), warm."""
    assert threading.current_thread() is not threading.main_thread()

    def warm() -> Any:
        mimeparts.clear_memos()  # every arriving message is new
        return examine(raw, tr.anchors, datetime.now(UTC), tr.revocation, tr.cache,
                       tr.issued)
    uncached = tr.revocation._check  # the OCSP-then-CRL chain behind the 10-minute cache

    def cold() -> Any:
        mimeparts.clear_memos()
        verify.clear_caches()  # parsed certificates and their facts
        return examine(raw, tr.anchors, datetime.now(UTC), CachedRevocation(uncached),
                       VerifyCache(), tr.issued)

    def seal_only() -> Any:
        mimeparts.clear_memos()
        return verify.verify_message(raw, tr.anchors, now=datetime.now(UTC),
                                     revocation=tr.revocation, cache=tr.cache, issued=tr.issued)

    rates = []
    for fn in (warm, cold, seal_only):
        ex = fn()
        v = getattr(ex, "verdict", ex)
        assert v.trusted and v.revocation_source == "ocsp", v
        n, c0, t0 = 0, time.thread_time(), time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            fn()
            n += 1
        rates.append(n / (time.thread_time() - c0))
    return rates[0], rates[1], rates[2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=400, help="documents for the full path")
    p.add_argument("--workers", type=int, default=0,
                   help="seal worker processes (default: the server's, one per CPU)")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent senders")
    p.add_argument("--seconds", type=float, default=3.0, help="duration of each loop")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--profile", action="store_true", help="profile the full path")
    p.add_argument("--compare", action="store_true",
                   help="also run the full path with every document queued to the docs"
                        " handler (the path before issue 17), in the same run")
    p.add_argument("--queries", dest="queries_detail", action="store_true",
                   help="print the statements per document of the full path by kind")
    args = p.parse_args()
    try:
        import uvloop
        result = uvloop.run(run(args))
    except ImportError:  # pragma: no cover
        result = asyncio.run(run(args))
    for k, v in result.items():
        print(f"{k:<34} {v:.3f}" if isinstance(v, float) else f"{k:<34} {v}")
    ok = result["full_path_vs_bare_at_N"] >= 0.5
    print(f"target (full path >= 50% of bare signing at N={result['seal_workers']}): "
          f"{'MET' if ok else 'MISSED'}")
    ok = result["verify_warm_per_core_s"] >= 2000
    print(f"target (warm verification >= 2,000/s per core): {'MET' if ok else 'MISSED'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
