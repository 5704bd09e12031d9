"""Verification of a sealed document per core (issue 17 item 4; a benchmark, not a test).

No server, no database: the city CA, an RSA-2048 unit seal (the default ``ca.key_type``)
and a document with a 100 KB attachment are made in memory, and the verifier gets what
the server's TrustStore gives it with the CA passphrase configured: the anchors, the
certificate table (``issued_check``), revocation through our own OCSP responder's logic
then the CRL, cached per certificate (``CachedRevocation``), and the path cache.

Modes, each on ONE core (the process is pinned to one CPU; CPU seconds of the thread):

* ``warm-examine``: ``arrival.examine``, the full arrival check: S/MIME signature,
  message digest, signed attributes, signer certificate, cached path, key strength, key
  usage/EKU, certificate table, cached revocation status and validity time, sender,
  the document's signed metadata, outer fields, and the rebuilt copy for the clerk;
* ``warm-seal``: ``verify.verify_message`` alone (the seal: everything but the metadata,
  outer-field comparison and rebuilt copy);
* ``cold-examine``: every message with empty caches (certificates parsed, path built,
  our OCSP answer signed by the CA key and read back).

    .venv/bin/python benchmarks/verify_bench.py [--seconds 3] [--json out.json]
    .venv/bin/python benchmarks/verify_bench.py --tree DIR [--rounds 3]
    .venv/bin/python benchmarks/verify_bench.py --instructions [--tree DIR ...]

``--tree DIR`` (repeatable) measures another checkout's code too (e.g. ``git archive main
| tar -x -C /tmp/main``), the trees taking turns on the same core for ``--rounds`` rounds
(median): before and after in one run. ``--instructions`` counts instructions per verification with callgrind (repeatable on a
busy machine): each mode runs in ``valgrind --tool=callgrind`` twice, with 20 and 120
verifications, and the difference is divided by 100 (start-up and set-up cancel out).
Under valgrind OpenSSL runs without SHA extensions, so SHA-256 of the 140 KB message is
about half of those instructions while it is ~15% of the CPU time on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
MODES = ("warm-examine", "warm-seal", "cold-examine")
DOC_SIZE = 100 * 1024


def make_fixture() -> dict[str, Any]:
    """The CA, the seal and one sealed document, as bytes (so a child process need not
    generate RSA keys under valgrind)."""
    from cryptography.hazmat.primitives import serialization

    from directory.ca import create_root_ca, issue_unit_seal
    from mailrelay.documents.docmime import Attachment, DocumentMeta
    from mailrelay.documents.seal import Signer, seal_document

    now = datetime.now(UTC)
    ca = create_root_ca(now=now - timedelta(days=30))
    seal = issue_unit_seal(ca, unit_code="finance", unit_name="楚雄市财政局",
                           domain="cx.example", now=now - timedelta(days=1))
    meta = DocumentMeta(DocumentMeta.new_id(), "楚财发〔2026〕1号", "基准测试", "finance",
                        ("stats",))
    raw = seal_document(meta, "请各单位认真贯彻执行。",
                        [Attachment("正文.pdf", os.urandom(DOC_SIZE), "application/pdf")],
                        Signer(seal.key, seal.certificate, (ca.certificate,)),
                        from_addr="finance.docs@cx.example",
                        to_addrs=["stats.docs@cx.example"], now=now, domain="cx.example")
    pem = serialization.Encoding.PEM
    nokey = serialization.NoEncryption()
    return {"ca_cert": ca.certificate.public_bytes(pem),
            "ca_key": ca.key.private_bytes(pem, serialization.PrivateFormat.PKCS8, nokey),
            "seal_cert": seal.certificate.public_bytes(pem), "raw": raw}


class Verifier:
    """The verifier's inputs as the server's TrustStore builds them (passphrase set)."""

    def __init__(self, fx: dict[str, Any]) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        from directory.ca import CertificateAuthority, CertStatus, Status, build_crl
        from mailrelay.documents.chain import TrustAnchors, VerifyCache
        from mailrelay.documents.revocation import CachedRevocation, crl_check, first_known
        from mailrelay.documents.trust import IssuedCert, issued_check, own_ocsp_check

        ca_cert = x509.load_pem_x509_certificate(fx["ca_cert"])
        self.ca = CertificateAuthority(
            ca_cert, serialization.load_pem_private_key(fx["ca_key"], None))  # type: ignore[arg-type]
        seal = x509.load_pem_x509_certificate(fx["seal_cert"])
        self.raw: bytes = fx["raw"]
        self.anchors = TrustAnchors((ca_cert,))
        der = seal.public_bytes(serialization.Encoding.DER)
        table = {seal.serial_number: IssuedCert(seal.serial_number, "seal", "finance",
                                                "finance.docs@cx.example", "valid", der)}
        self.issued = issued_check(ca_cert, table)
        crl = build_crl(self.ca, [], now=datetime.now(UTC) - timedelta(minutes=1),
                        crl_number=1)
        self.uncached = first_known(
            own_ocsp_check(self.ca, {seal.serial_number: CertStatus(Status.GOOD)}),
            crl_check([crl]))
        self.revocation = CachedRevocation(self.uncached)
        self.cache = VerifyCache()
        self._new_cache = VerifyCache
        self._new_revocation = CachedRevocation

    def warm_examine(self) -> Any:
        from mailrelay.documents.arrival import examine
        _new_message()
        return examine(self.raw, self.anchors, datetime.now(UTC), self.revocation,
                       self.cache, self.issued)

    def warm_seal(self) -> Any:
        from mailrelay.documents.verify import verify_message
        _new_message()
        return verify_message(self.raw, self.anchors, now=datetime.now(UTC),
                              revocation=self.revocation, cache=self.cache,
                              issued=self.issued)

    def cold_examine(self) -> Any:
        from mailrelay.documents.arrival import examine
        _new_message()
        _clear_certificate_caches()
        return examine(self.raw, self.anchors, datetime.now(UTC),
                       self._new_revocation(self.uncached), self._new_cache(), self.issued)

    def fn(self, mode: str) -> Callable[[], Any]:
        return {"warm-examine": self.warm_examine, "warm-seal": self.warm_seal,
                "cold-examine": self.cold_examine}[mode]


def _new_message() -> None:
    """Every arriving message is new: forget per-message memos (header blocks)."""
    from mailrelay.documents import mimeparts
    clear = getattr(mimeparts, "clear_memos", None)
    if clear is not None:
        clear()
    else:
        mimeparts._read_headers_memo.cache_clear()


def _clear_certificate_caches() -> None:
    """Forget every per-certificate cache of the tree under test (names differ between
    versions: whatever exists is cleared)."""
    from mailrelay.documents import cms, verify
    clear = getattr(verify, "clear_caches", None)
    if clear is not None:
        clear()
        return
    for fn in (getattr(cms, "load_certificate", None),
               getattr(verify, "_signer_fields_of", None)):
        if fn is not None:
            fn.cache_clear()


def check(v: Verifier, mode: str) -> None:
    got = v.fn(mode)()
    verdict = getattr(got, "verdict", got)
    assert verdict.trusted and verdict.revocation_source == "ocsp", verdict
    if mode.endswith("examine"):
        assert got.meta is not None and not got.mismatches and got.delivered, got


def per_core(v: Verifier, mode: str, seconds: float) -> float:
    """Verifications per CPU second of one thread."""
    fn = v.fn(mode)
    check(v, mode)
    n, c0, t0 = 0, time.thread_time(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.thread_time() - c0)


def pin_one_core() -> str:
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return "not pinned (no sched_setaffinity)"


def loop_main(fixture: Path, mode: str, count: int) -> None:
    """The child under callgrind: ``count`` verifications of ``mode`` after one check."""
    v = Verifier(pickle.loads(fixture.read_bytes()))
    check(v, mode)
    fn = v.fn(mode)
    for _ in range(count):
        fn()


def rate_main(fixture: Path, mode: str, seconds: float) -> None:
    """The child of a side-by-side run: one mode's rate on this process's one core."""
    pin_one_core()
    v = Verifier(pickle.loads(fixture.read_bytes()))
    print(per_core(v, mode, seconds))


def side_by_side(fixture: Path, trees: list[Path], modes: list[str], seconds: float,
                 rounds: int) -> dict[tuple[str, Path], float]:
    """Median rate of each (mode, tree), the trees taking turns round by round on the
    same core, so the machine's load falls on each alike."""
    rates: dict[tuple[str, Path], list[float]] = {}
    cpu = min(os.sched_getaffinity(0))
    for _ in range(rounds):
        for mode in modes:
            for tree in trees:
                env = dict(os.environ, PYTHONPATH=str(tree))
                proc = subprocess.run(
                    ["taskset", "-c", str(cpu), sys.executable, str(Path(__file__).resolve()),
                     "--rate", mode, str(seconds), "--fixture", str(fixture)],
                    env=env, cwd=tree, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    raise SystemExit(f"run failed ({tree}, {mode}):\n{proc.stderr[-2000:]}")
                rates.setdefault((mode, tree), []).append(float(proc.stdout.split()[-1]))
    return {k: sorted(v)[len(v) // 2] for k, v in rates.items()}


def instructions(fixture: Path, tree: Path, mode: str, low: int = 20,
                 high: int = 120) -> float:
    counts = []
    for n in (low, high):
        env = dict(os.environ, PYTHONPATH=str(tree), PYTHONHASHSEED="0")
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
             sys.executable, str(Path(__file__).resolve()), "--loop", mode, str(n),
             "--fixture", str(fixture)],
            env=env, cwd=tree, capture_output=True, text=True, check=False)
        found = re.search(r"Collected : (\d+)", proc.stderr)
        if proc.returncode != 0 or found is None:
            raise SystemExit(f"callgrind run failed ({tree}, {mode}):\n{proc.stderr[-2000:]}")
        counts.append(int(found.group(1)))
    return (counts[1] - counts[0]) / (high - low)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0, help="duration of each mode")
    p.add_argument("--instructions", action="store_true",
                   help="instructions per verification (callgrind) instead of CPU time")
    p.add_argument("--tree", action="append", default=[], type=Path,
                   help="also measure this checkout's code (with --instructions)")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--rounds", type=int, default=3,
                   help="with --tree: rounds of the trees taking turns (median kept)")
    p.add_argument("--loop", nargs=2, metavar=("MODE", "COUNT"), help=argparse.SUPPRESS)
    p.add_argument("--rate", nargs=2, metavar=("MODE", "SECONDS"), help=argparse.SUPPRESS)
    p.add_argument("--fixture", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.loop:
        loop_main(args.fixture, args.loop[0], int(args.loop[1]))
        return
    if args.rate:
        rate_main(args.fixture, args.rate[0], float(args.rate[1]))
        return
    sys.path.insert(0, str(HERE))
    modes = [m for m in args.modes.split(",") if m]
    out: dict[str, Any] = {"machine": f"{os.cpu_count()} CPUs, load "
                                      f"{os.getloadavg()[0]:.1f} at start",
                           "key": "RSA-2048 unit seal, SHA-256", "attachment": DOC_SIZE}
    fx = make_fixture()
    if args.instructions:
        with tempfile.TemporaryDirectory(prefix="cxverify") as tmp:
            fixture = Path(tmp) / "fixture.pickle"
            fixture.write_bytes(pickle.dumps(fx))
            for tree in [HERE, *args.tree]:
                for mode in modes:
                    key = f"instructions_per_verification {mode} [{tree}]"
                    out[key] = instructions(fixture, tree.resolve(), mode)
                    print(f"{key}: {out[key]:,.0f}", file=sys.stderr, flush=True)
    elif args.tree:
        with tempfile.TemporaryDirectory(prefix="cxverify") as tmp:
            fixture = Path(tmp) / "fixture.pickle"
            fixture.write_bytes(pickle.dumps(fx))
            trees = [HERE, *(t.resolve() for t in args.tree)]
            got = side_by_side(fixture, trees, modes, args.seconds, args.rounds)
        out["core"] = f"each run pinned to CPU {min(os.sched_getaffinity(0))}"
        for (mode, tree), rate in got.items():
            out[f"{mode} CPU us per verification [{tree}]"] = 1e6 / rate
            out[f"{mode} per core-second [{tree}]"] = rate
    else:
        out["core"] = pin_one_core()
        v = Verifier(fx)
        result: dict[str, float] = {}

        def run() -> None:
            for mode in modes:
                result[mode] = per_core(v, mode, args.seconds)
        t = threading.Thread(target=run)  # thread_time of this thread only
        t.start()
        t.join()
        for mode in modes:
            out[f"{mode} per core-second (one core)"] = result[mode]
            out[f"{mode} CPU us per verification"] = 1e6 / result[mode]
        for mode in ("warm-examine", "warm-seal"):
            if mode in result:
                ok = result[mode] >= 2000
                out[f"target {mode} >= 2,000/s per core"] = "MET" if ok else "MISSED"
    for k, val in out.items():
        print(f"{k:<58} {val:,.1f}" if isinstance(val, float) else f"{k:<58} {val}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
