"""Official documents benchmark (issue 7; a benchmark, not a test).

In one process, on an embedded PostgreSQL (pgserver) in a temporary directory:
  1. bare signing: cryptography's PKCS7SignatureBuilder (SHA-256, detached, DER) over the
     same 100 KB document entity with the same unit seal key, one thread, back to back;
  2. the gateway path: `DocumentService.send` (build the MIME document, seal once in the
     executor, write the document row, submit through the ordinary submission stage with
     group commit, link the row) with --concurrency senders, until COMMIT;
  3. verification per second: `inbound.examine` (S/MIME + chain + CRL + document parse)
     on one thread, and the queued backlog of step 2 verified and delivered by the
     running server's docs handler;
  4. a circular to all 93 units of the demo directory: from `send` until the document is
     verified and in every clerk's INBOX.

    .venv/bin/python benchmarks/doc_bench.py [--count 400] [--concurrency 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.serialization import pkcs7  # noqa: E402

from cxkernel.config import from_dict  # noqa: E402
from directory import demo  # noqa: E402
from mailrelay.documents.arrival import examine  # noqa: E402
from mailrelay.documents.docmime import Attachment, DocumentMeta  # noqa: E402
from mailrelay.documents.seal import prepare_document  # noqa: E402

PASSPHRASE = "Bench-passphrase-2026"
DOC_SIZE = 100 * 1024


def attachment() -> Attachment:
    return Attachment("正文.pdf", os.urandom(DOC_SIZE), "application/pdf")


def bare_rate(key: Any, cert: Any, entity: bytes, seconds: float) -> float:
    """Detached CMS signatures per second straight from cryptography, one thread."""
    opts = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        pkcs7.PKCS7SignatureBuilder().set_data(entity).add_signer(
            cert, key, hashes.SHA256()).sign(serialization.Encoding.DER, opts)
        n += 1
    return n / (time.perf_counter() - t0)


class CpuMeter:
    """CPU seconds (user + system) of this process and of the PostgreSQL server processes
    (the embedded server's data directory in their command line), to account per stage."""

    def __init__(self, pg_dir: str) -> None:
        self.pg_dir = pg_dir
        self.t0 = (0.0, 0.0)

    def _pg(self) -> float:
        try:
            import psutil
        except ImportError:  # pragma: no cover
            return float("nan")
        total = 0.0
        for proc in psutil.process_iter(["cmdline"]):
            if self.pg_dir not in " ".join(proc.info["cmdline"] or ()):
                continue
            try:
                procs = [proc, *proc.children(recursive=True)]
                for one in procs:
                    t = one.cpu_times()
                    total += t.user + t.system
            except psutil.Error:
                continue
        return total

    def now(self) -> tuple[float, float]:
        t = os.times()
        return t.user + t.system, self._pg()

    def start(self) -> None:
        self.t0 = self.now()

    def per(self, n: int) -> dict[str, float]:
        me, pg = self.now()
        return {"gateway_cpu_ms": (me - self.t0[0]) / n * 1000,
                "postgres_cpu_ms": (pg - self.t0[1]) / n * 1000}


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
        listen = {k: "" for k in ("smtp", "submission", "submissions", "imap", "imaps", "xmpp",
                                  "xmpps")}
        listen["http"] = "127.0.0.1:0"
        cfg = from_dict({"server": {"domain": "cx.example", "state_dir": str(tmp / "state"),
                                    "log_level": "warning"},
                         "database": {"url": url, "pool_max": 30}, "listen": listen,
                         "ca": {"passphrase": PASSPHRASE}})
        services = await open_services(cfg)
        args.cpu = CpuMeter(str(tmp))
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

    out: dict[str, Any] = {"doc_size": DOC_SIZE, "count": args.count,
                           "concurrency": args.concurrency, "cpus": os.cpu_count()}
    await demo.seed(services.directory, count=200)
    certs = CertificateService.from_config(cfg, services.db.pool)
    await certs.init_ca()
    for unit in ("gov-office", "finance"):
        await certs.issue_seal(unit)
    parts = build(services.db.pool, cfg, services.metrics)
    await parts.book.reload()
    docs = DocumentService(services.db.pool, certs, parts.submitter, parts.book, "cx.example")
    att = attachment()

    # 1. bare cryptography on the same key and the same entity
    seal = await certs.seal_key("finance")
    meta = DocumentMeta(DocumentMeta.new_id(), "楚财发〔2026〕1号", "基准测试", "finance", ("stats",))
    entity = prepare_document(meta, "", [att], from_addr="finance.docs@cx.example",
                              to_addrs=["stats.docs@cx.example"], now=datetime.now(UTC),
                              domain="cx.example").entity
    args.cpu.start()
    out["bare_sign_per_s"] = bare_rate(seal.key, seal.certificate, entity, args.seconds)
    out["bare_sign_cpu_ms"] = 1000 / out["bare_sign_per_s"]

    # 1b. our sealing alone (build MIME + sign in the executor + assemble), no storage
    from mailrelay.documents.seal import sign_detached
    signer = await docs.signer("finance")
    loop = asyncio.get_running_loop()

    def seal_once() -> bytes:
        p = prepare_document(meta, "", [att], from_addr="finance.docs@cx.example",
                             to_addrs=["stats.docs@cx.example"], now=datetime.now(UTC),
                             domain="cx.example")
        return p.finish(sign_detached(p.entity, signer))
    n, t0 = 0, time.perf_counter()
    args.cpu.start()
    while time.perf_counter() - t0 < args.seconds:
        await asyncio.gather(*(loop.run_in_executor(None, seal_once)
                               for _ in range(args.concurrency)))
        n += args.concurrency
    out["seal_only_per_s"] = n / (time.perf_counter() - t0)
    out["seal_only_cpu_ms"] = args.cpu.per(n)["gateway_cpu_ms"]

    # 2. the gateway path through the submission stage (no scheduler running yet)
    await docs.send(from_unit="finance", to=["stats"], title="warm-up", number="0",
                    attachments=[att])
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(args.count):
        queue.put_nowait(i)

    async def sender() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            await docs.send(from_unit="finance", to=["stats"], title=f"基准测试 {i}",
                            number=f"楚财发〔2026〕{i}号", attachments=[att])
    prof = None
    if args.profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    t0 = time.perf_counter()
    args.cpu.start()
    await asyncio.gather(*(sender() for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - t0
    cpu = args.cpu.per(args.count)
    out["gateway_cpu_ms_per_doc"] = cpu["gateway_cpu_ms"]
    out["postgres_cpu_ms_per_doc"] = cpu["postgres_cpu_ms"]
    if prof is not None:
        import pstats
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    out["gateway_sealed_per_s"] = args.count / elapsed
    out["gateway_vs_bare"] = out["gateway_sealed_per_s"] / out["bare_sign_per_s"]
    await parts.submitter.close()

    # 3a. verification on one thread
    async with services.db.pool.acquire() as conn:
        raw = bytes(await conn.fetchval("select m.raw from documents d join messages m"
                                        " on m.id = d.message_id order by d.id desc limit 1"))
    await docs.trust.refresh()
    tr = docs.trust
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        ex = examine(raw, tr.anchors, datetime.now(UTC), tr.revocation, tr.cache)
        n += 1
    assert ex.verdict.trusted, ex.verdict
    out["verify_per_s_one_thread"] = n / (time.perf_counter() - t0)

    # 3b. the backlog verified and delivered by the server's docs handler
    server = RunningServer(services)
    t0 = time.perf_counter()
    await server.start()
    try:
        total = args.count + 1
        while await delivered_rows(services.db.pool) < total:
            if time.perf_counter() - t0 > 600:
                raise SystemExit("backlog not delivered in 10 minutes")
            await asyncio.sleep(0.02)
        out["handler_verified_delivered_per_s"] = total / (time.perf_counter() - t0)

        # 4. a circular to all 93 units, until verified in every clerk's INBOX
        live = services.components["docs"]
        t0 = time.perf_counter()
        sent = await live.send(from_unit="gov-office", to=["all"], title="关于春节值班的通知",
                               number="楚政办电〔2026〕1号", attachments=[att])
        t_queued = time.perf_counter() - t0
        while await delivered_rows(services.db.pool) < total + len(sent.units):
            if time.perf_counter() - t0 > 300:
                raise SystemExit("circular not delivered in 5 minutes")
            await asyncio.sleep(0.01)
        out["circular_units"] = len(sent.units)
        out["circular_queued_s"] = t_queued
        out["circular_all_inboxes_s"] = time.perf_counter() - t0
    finally:
        await server.stop()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=400, help="documents for the gateway path")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--seconds", type=float, default=3.0, help="duration of the bare loops")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--profile", action="store_true", help="profile the gateway path")
    args = p.parse_args()
    try:
        import uvloop
        result = uvloop.run(run(args))
    except ImportError:  # pragma: no cover
        result = asyncio.run(run(args))
    for k, v in result.items():
        print(f"{k:<34} {v:.3f}" if isinstance(v, float) else f"{k:<34} {v}")
    bar = "PASS" if result["gateway_vs_bare"] >= 0.8 else "FAIL"
    print(f"bar (gateway >= 80% of bare signing): {bar}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
