"""Seal and verify throughput for 100 KB official documents, on one core.

    .venv/bin/python benchmarks/seal_bench.py [--seconds 2] [--size 102400]

Compares, on the same key: a bare RSA/ECDSA signature over the bytes, cryptography's
PKCS#7 detached signature (DER), our full seal (MIME build + sign + assemble), and
verification of the sealed message (with the per-signer VerifyCache, and cold: no path
cache, no parsed-certificate cache). No revocation check here: doc_bench.py measures
verification with the server's revocation sources, warm and cold.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from directory.ca import CertificateAuthority, KeyAlgorithm, create_root_ca, issue_unit_seal
from mailrelay.documents import mimeparts, verify
from mailrelay.documents.chain import TrustAnchors, VerifyCache
from mailrelay.documents.docmime import Attachment, DocumentMeta
from mailrelay.documents.seal import Signer, seal_document
from mailrelay.documents.verify import verify_message


def rate(fn: Callable[[], object], seconds: float) -> float:
    fn()  # warm up
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        fn()
        n += 1
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def bench(algo: KeyAlgorithm, ca: CertificateAuthority, anchors: TrustAnchors, data: bytes,
          meta: DocumentMeta, attachments: list[Attachment], now: datetime,
          seconds: float) -> None:
    seal = issue_unit_seal(ca, unit_code="finance", unit_name="财政局", domain="cx.example",
                           now=now, algorithm=algo)
    key = seal.key
    signer = Signer(key, seal.certificate, (ca.certificate,))

    def bare() -> bytes:
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key.sign(data, ec.ECDSA(hashes.SHA256()))

    def p7() -> bytes:
        return (pkcs7.PKCS7SignatureBuilder().set_data(data)
                .add_signer(seal.certificate, key, hashes.SHA256())
                .add_certificate(ca.certificate)
                .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature,
                                                   pkcs7.PKCS7Options.Binary]))

    def sealed() -> bytes:
        return seal_document(meta, "请查收。", attachments, signer,
                             from_addr="finance.docs@cx.example",
                             to_addrs=["stats.docs@cx.example"], now=now, domain="cx.example")

    raw = sealed()
    cache = VerifyCache()
    assert verify_message(raw, anchors, now=now, cache=cache).trusted

    def verify_cached() -> object:
        mimeparts.clear_memos()  # each arriving message is new
        return verify_message(raw, anchors, now=now, cache=cache)

    def verify_cold() -> object:
        # Nothing kept from the last message: certificates parsed, path built again.
        verify.clear_caches()
        mimeparts.clear_memos()
        return verify_message(raw, anchors, now=now)

    print(f"\n{algo.value}: sealed message {len(raw)} bytes")
    for label, fn in [("bare key.sign(100 KB)", bare),
                      ("cryptography PKCS#7 DER detached", p7),
                      ("seal_document (MIME + sign + assemble)", sealed),
                      ("verify_message, VerifyCache warm", verify_cached),
                      ("verify_message, no cache", verify_cold)]:
        print(f"  {label:42s} {rate(fn, seconds):10.0f} /s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--size", type=int, default=100 * 1024)
    args = ap.parse_args()
    now = datetime.now(UTC)
    ca = create_root_ca(now=now)
    anchors = TrustAnchors((ca.certificate,))
    data = os.urandom(args.size)
    meta = DocumentMeta(DocumentMeta.new_id(), "楚政办发〔2026〕12号",
                        "关于印发《数字政府建设工作要点》的通知", "finance", ("stats",))
    attachments = [Attachment("附件1：工作要点.pdf", data, "application/pdf")]
    print(f"document attachment {args.size} bytes, {args.seconds}s per measurement, 1 core")
    for algo in (KeyAlgorithm.RSA2048, KeyAlgorithm.ECDSA_P256):
        bench(algo, ca, anchors, data, meta, attachments, now, args.seconds)


if __name__ == "__main__":
    main()
