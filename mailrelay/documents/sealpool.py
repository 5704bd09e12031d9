"""Seal documents in worker processes (issue #17 item 4).

cryptography's RSA and ECDSA signing hold the GIL (measured: two threads sign no faster
than one), and building the MIME entity (base64 of every attachment) is Python work too,
so sealing in the loop's thread pool serialises every document of the process behind one
GIL. :class:`SealPool` runs the whole blocking step (build the entity once, sign it, wrap
it: :func:`mailrelay.documents.seal.seal_prepared`) in a ``ProcessPoolExecutor``.

Keys stay as protected as the pipe allows: a random AES-256-GCM wrapping key is made per
pool and given to each worker once, when it starts; a job carries the seal key only
wrapped under it (encrypted once per key in the parent, authenticated with the
certificate's fingerprint), and each worker unwraps and loads a key once, then keeps it
for the next documents. The plaintext key never goes through a pipe, and the stored
keys (PKCS#8 under the CA passphrase) are decrypted once, by the parent, as before.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .docmime import Attachment, DocumentMeta
from .seal import Signer, seal_prepared

T = TypeVar("T")
MAX_KEYS = 256  # seal keys kept per worker (one per unit in use)


@dataclass(frozen=True)
class KeyRef:
    """A seal as a job carries it: public parts in the clear, the key wrapped."""

    ident: bytes  # SHA-256 of the signer certificate
    wrapped: bytes = field(repr=False)  # nonce + AES-GCM(PKCS#8 DER), aad = ident
    certificate: bytes  # DER
    chain: tuple[bytes, ...]
    rsa_pss: bool
    include_certificates: bool


@dataclass(frozen=True)
class Sealed:
    """What a worker sends back: the message, its Message-ID, the entity's SHA-256."""

    raw: bytes = field(repr=False)
    message_id: str
    digest: bytes


# ---- worker side --------------------------------------------------------------------
_wrapping: AESGCM | None = None
_signers: OrderedDict[bytes, Signer] = OrderedDict()


def _init_worker(secret: bytes) -> None:
    global _wrapping
    _wrapping = AESGCM(secret)


def _worker_signer(ref: KeyRef) -> Signer:
    found = _signers.get(ref.ident)
    if found is not None:
        _signers.move_to_end(ref.ident)
        return found
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    if _wrapping is None:
        raise RuntimeError("seal worker started without its wrapping key")
    der = _wrapping.decrypt(ref.wrapped[:12], ref.wrapped[12:], ref.ident)
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"unsupported seal key {type(key).__name__}")
    signer = Signer(key, x509.load_der_x509_certificate(ref.certificate),
                    tuple(x509.load_der_x509_certificate(c) for c in ref.chain),
                    rsa_pss=ref.rsa_pss, include_certificates=ref.include_certificates)
    _signers[ref.ident] = signer
    while len(_signers) > MAX_KEYS:
        _signers.popitem(last=False)
    return signer


def _seal_job(ref: KeyRef, meta: DocumentMeta, note: str, attachments: list[Attachment],
              from_addr: str, to_addrs: Sequence[str], now: datetime, domain: str) -> Sealed:
    done = seal_prepared(meta, note, attachments, _worker_signer(ref), from_addr=from_addr,
                         to_addrs=to_addrs, now=now, domain=domain)
    # Only the message goes back (the entity is inside it): one copy through the pipe.
    return Sealed(done.raw, done.prepared.envelope.message_id, done.digest)


def _ready() -> int:
    return os.getpid()


# ---- parent side --------------------------------------------------------------------
class SealPool:
    """A process pool that seals documents; processes start at the first document."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._secret = AESGCM.generate_key(bit_length=256)
        self._pool: ProcessPoolExecutor | None = None
        self._refs: dict[bytes, KeyRef] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show the wrapping key
        return f"SealPool(workers={self.workers})"

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # forkserver: workers fork from a small clean server process (not from
                # this one with its threads, sockets and event loop), with this module
                # and cryptography already imported there.
                ctx = multiprocessing.get_context("forkserver")
                ctx.set_forkserver_preload([__name__])
                self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx,
                                                 initializer=_init_worker,
                                                 initargs=(self._secret,))
            return self._pool

    def key_ref(self, signer: Signer) -> KeyRef:
        """The wrapped form of a seal, made once per certificate."""
        ident = signer.certificate.fingerprint(hashes.SHA256())
        ref = self._refs.get(ident)
        if ref is None:
            der = signer.key.private_bytes(serialization.Encoding.DER,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())
            nonce = os.urandom(12)
            ref = KeyRef(ident, nonce + AESGCM(self._secret).encrypt(nonce, der, ident),
                         signer.certificate.public_bytes(serialization.Encoding.DER),
                         tuple(c.public_bytes(serialization.Encoding.DER)
                               for c in signer.chain),
                         signer.rsa_pss, signer.include_certificates)
            if len(self._refs) >= 4 * MAX_KEYS:
                self._refs.clear()
            self._refs[ident] = ref
        return ref

    async def start(self) -> None:
        """Start every worker now (benchmarks; the server starts them at first use)."""
        pool = self._executor()
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(pool, _ready)
                               for _ in range(self.workers)))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a module-level function in one of the workers (benchmarks)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor(), fn, *args)

    async def seal(self, meta: DocumentMeta, note: str, attachments: Sequence[Attachment],
                   signer: Signer, *, from_addr: str, to_addrs: Sequence[str],
                   now: datetime, domain: str) -> Sealed:
        ref = self.key_ref(signer)
        pool = self._executor()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, _seal_job, ref, meta, note,
                                              list(attachments), from_addr, list(to_addrs),
                                              now, domain)
        except BrokenProcessPool:
            # A worker died (OOM killer, a signal): this document fails (nothing was
            # stored yet); the next one starts a fresh pool.
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def sign_loop(ref: KeyRef, entity: bytes, start_at: float, seconds: float) -> int:
    """Benchmark helper (benchmarks/doc_bench.py): bare cryptography detached PKCS#7
    signatures over ``entity`` in a seal worker, with the key it holds, back to back
    from wall-clock ``start_at`` for ``seconds``; returns how many."""
    import time

    from cryptography.hazmat.primitives.serialization import pkcs7
    signer = _worker_signer(ref)
    opts = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    while time.time() < start_at:
        time.sleep(0.001)
    n, end = 0, start_at + seconds
    while time.time() < end:
        pkcs7.PKCS7SignatureBuilder().set_data(entity).add_signer(
            signer.certificate, signer.key, hashes.SHA256()).sign(
            serialization.Encoding.DER, opts)
        n += 1
    return n
