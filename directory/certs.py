"""The CA/RA service: the city root CA, unit seals and personal certificates, kept in
PostgreSQL with every private key encrypted at rest (PKCS#8, the CA passphrase).

The CLI and the server share these functions. Key generation, signing and key
decryption are CPU-bound and run in a thread pool (key objects do not pickle, so never
a process pool). Decrypted keys stay in this process's memory only; nothing here logs
a key or the passphrase.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import stat
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp as x509_ocsp

from cxkernel.config import CAConfig, Config
from cxkernel.errors import Conflict, Invalid, NotFound
from directory import certs_repo as repo
from directory.ca import (
    CertificateAuthority,
    CertStatus,
    IssuedCertificate,
    KeyAlgorithm,
    PrivateKey,
    Revocation,
    RevocationReason,
    Status,
    build_crl,
    build_ocsp_response,
    create_root_ca,
    dump_private_key,
    export_pkcs12,
    issue_personal_certificate,
    issue_unit_seal,
    load_private_key,
    unit_docs_address,
)
from directory.ca.keys import PBKDF2_ITERATIONS, kdf_iterations, passphrase_problem
from directory.model import check_unit_code, normalise_address

T = TypeVar("T")
log = logging.getLogger("cxgw.ca")
PASSPHRASE_ENV = "CXGW_CA_PASSPHRASE"
CRL_PATH = "/ca/crl.der"
CRL_PEM_PATH = "/ca/crl.pem"
OCSP_PATH = "/ca/ocsp"
CRL_VALIDITY = timedelta(days=7)


def passphrase_from(ca: CAConfig, env: Mapping[str, str] | None = None) -> bytes | None:
    """The CA passphrase: $CXGW_CA_PASSPHRASE, else ``ca.passphrase``, else the first line
    of ``ca.passphrase_file``; None when none is configured."""
    env = os.environ if env is None else env
    if env.get(PASSPHRASE_ENV):
        return env[PASSPHRASE_ENV].encode("utf-8")
    if ca.passphrase:
        return ca.passphrase.encode("utf-8")
    if ca.passphrase_file:
        try:
            with open(ca.passphrase_file, "rb") as fh:
                value = fh.readline().rstrip(b"\r\n")
        except OSError as exc:
            raise Invalid(f"cannot read ca.passphrase_file: {exc.strerror}") from None
        return value or None
    return None


def passphrase_file_exposed(ca: CAConfig) -> bool:
    """True (and a warning logged) when ``ca.passphrase_file`` is readable by group or
    others: it unlocks every seal."""
    if not ca.passphrase_file:
        return False
    try:
        mode = os.stat(ca.passphrase_file).st_mode
    except OSError:
        return False
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("ca.passphrase_file %s is accessible by other users (mode %o):"
                    " chmod 600 it", ca.passphrase_file, stat.S_IMODE(mode))
        return True
    return False


def format_serial(serial: int) -> str:
    return f"{serial:x}"


def parse_serial(text: str) -> str:
    """Accept hex with or without ``0x``, colons or spaces; return the stored form."""
    clean = text.strip().lower().replace(":", "").replace(" ", "")
    clean = clean.removeprefix("0x")
    try:
        return format_serial(int(clean, 16))
    except ValueError:
        raise Invalid(f"bad serial number {text!r}: expected hexadecimal") from None


def parse_reason(name: str) -> RevocationReason:
    """``key-compromise``, ``superseded``, ``cessation-of-operation``... (RFC 5280 §5.3.1)."""
    key = name.strip().upper().replace("-", "_")
    try:
        reason = RevocationReason[key]
    except KeyError:
        names = ", ".join(r.name.lower().replace("_", "-") for r in RevocationReason)
        raise Invalid(f"unknown revocation reason {name!r} ({names})") from None
    if reason is RevocationReason.REMOVE_FROM_CRL:
        raise Invalid("remove-from-crl is not a reason to revoke")
    return reason


@dataclass(frozen=True)
class CertInfo:
    """What `cert list` shows about one certificate (never the key)."""

    serial: str
    kind: str
    unit: str | None
    address: str
    subject: str
    not_before: datetime
    not_after: datetime
    status: str
    revoked_at: datetime | None
    reason: str | None
    has_key: bool

    @classmethod
    def from_row(cls, r: repo.CertRow) -> CertInfo:
        reason = None
        if r.status == "revoked":
            reason = RevocationReason(r.reason or 0).name.lower().replace("_", "-")
        status = r.status
        if status == "valid" and r.not_after <= datetime.now(UTC):
            status = "expired"
        return cls(r.serial, r.kind, r.unit_code, r.address, r.subject, r.not_before,
                   r.not_after, status, r.revoked_at, reason, r.has_key)

    def as_dict(self) -> dict[str, Any]:
        return {"serial": self.serial, "kind": self.kind, "unit": self.unit,
                "address": self.address, "subject": self.subject,
                "not_before": self.not_before.isoformat(),
                "not_after": self.not_after.isoformat(), "state": self.status,
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
                "reason": self.reason}


@dataclass(frozen=True)
class SealKey:
    """A unit's seal as the signer needs it: key (in memory), certificate, the CA."""

    key: PrivateKey
    certificate: x509.Certificate
    ca_certificate: x509.Certificate


class CertificateService:
    """Every change to the CA and its certificates goes through here."""

    def __init__(self, pool: asyncpg.Pool, *, domain: str, passphrase: bytes | None,
                 key_type: str = "rsa2048", public_url: str = "",
                 organization: str = "CX City Government",
                 executor: Executor | None = None) -> None:
        self.pool = pool
        self.domain = domain.lower()
        self._passphrase = passphrase
        self.algorithm = KeyAlgorithm(key_type)
        self.public_url = public_url.rstrip("/")
        self.organization = organization
        self.executor = executor
        self._ca: CertificateAuthority | None = None
        self._ca_cert: x509.Certificate | None = None
        self._keys: dict[str, PrivateKey] = {}
        self._crl: tuple[int, datetime, x509.CertificateRevocationList] | None = None

    @classmethod
    def from_config(cls, cfg: Config, pool: asyncpg.Pool) -> CertificateService:
        """As configured: passphrase, key type, and the public base URL for CRL/OCSP
        (``ca.public_url``, else ``http://<listen.http>``)."""
        base = cfg.ca.public_url or (f"http://{cfg.listen.http}" if cfg.listen.http else "")
        return cls(pool, domain=cfg.server.domain, passphrase=passphrase_from(cfg.ca),
                   key_type=cfg.ca.key_type, public_url=base)

    def __repr__(self) -> str:  # never show the passphrase
        return f"CertificateService(domain={self.domain!r})"

    # ---- helpers ---------------------------------------------------------------------
    def warn_if_passphrase_file_readable(self, cfg: Config) -> bool:
        """Issue #11 item 9: log a warning when the passphrase file is readable by others."""
        return passphrase_file_exposed(cfg.ca)

    @property
    def has_passphrase(self) -> bool:
        return bool(self._passphrase)

    @property
    def crl_url(self) -> str | None:
        return self.public_url + CRL_PATH if self.public_url else None

    @property
    def ocsp_url(self) -> str | None:
        return self.public_url + OCSP_PATH if self.public_url else None

    async def _run(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kw))

    def _need_passphrase(self) -> bytes:
        if not self._passphrase:
            raise Invalid("the CA passphrase is not configured: set ca.passphrase, "
                          f"ca.passphrase_file or ${PASSPHRASE_ENV}")
        return self._passphrase

    async def _upgrade(self, key: PrivateKey, pem: bytes, serial: str | None) -> None:
        """Issue #11 item 9: a key stored with a weaker KDF than PBKDF2 at 600,000
        iterations (before this version) is re-encrypted the first time it is used."""
        if kdf_iterations(pem) >= PBKDF2_ITERATIONS:
            return
        fresh = await self._run(dump_private_key, key, self._need_passphrase())
        async with self.pool.acquire() as conn:
            await repo.replace_key(conn, serial, pem, fresh)
        log.info("re-encrypted the %s key with PBKDF2 (%d iterations)",
                 f"certificate {serial}" if serial else "CA", PBKDF2_ITERATIONS)

    async def _decrypt(self, pem: bytes) -> PrivateKey:
        passphrase = self._need_passphrase()
        try:
            return await self._run(load_private_key, pem, passphrase)
        except (ValueError, TypeError):
            raise Invalid("the CA passphrase does not decrypt the stored keys") from None

    # ---- the CA ----------------------------------------------------------------------
    async def init_ca(self, common_name: str = "CX City Root CA",
                      organization: str | None = None) -> x509.Certificate:
        """Create the root CA once (Conflict if it exists); its key is stored encrypted."""
        passphrase = self._need_passphrase()
        weak = passphrase_problem(passphrase)
        if weak is not None:  # issue #11 item 9: it protects every key at rest
            raise Invalid(f"the CA passphrase is too weak: {weak}")
        async with self.pool.acquire() as conn:
            if await repo.get_ca(conn) is not None:
                raise Conflict("the CA already exists")
        ca = await self._run(create_root_ca, now=datetime.now(UTC), common_name=common_name,
                             organization=organization or self.organization,
                             algorithm=self.algorithm)
        key_pem = await self._run(dump_private_key, ca.key, passphrase)
        cert_pem = ca.certificate.public_bytes(serialization.Encoding.PEM)
        async with self.pool.acquire() as conn:
            if not await repo.insert_ca(conn, cert_pem, key_pem, self.algorithm.value):
                raise Conflict("the CA already exists")
        self._ca, self._ca_cert = ca, ca.certificate
        return ca.certificate

    async def ca_certificate(self) -> x509.Certificate:
        if self._ca_cert is None:
            async with self.pool.acquire() as conn:
                row = await repo.get_ca(conn)
            if row is None:
                raise NotFound("there is no CA yet: run `cxgw ca init`")
            self._ca_cert = x509.load_pem_x509_certificate(row.cert_pem)
        return self._ca_cert

    async def has_ca(self) -> bool:
        async with self.pool.acquire() as conn:
            return await repo.revision(conn) > 0

    async def load_ca(self) -> CertificateAuthority:
        """The CA with its private key (decrypted once per process, kept in memory)."""
        if self._ca is None:
            async with self.pool.acquire() as conn:
                row = await repo.get_ca(conn)
            if row is None:
                raise NotFound("there is no CA yet: run `cxgw ca init`")
            key = await self._decrypt(row.key_pem)
            await self._upgrade(key, row.key_pem, None)
            self._ca = CertificateAuthority(x509.load_pem_x509_certificate(row.cert_pem), key)
            self._ca_cert = self._ca.certificate
        return self._ca

    async def revision(self) -> int:
        async with self.pool.acquire() as conn:
            return await repo.revision(conn)

    # ---- issuing ---------------------------------------------------------------------
    async def _store(self, issued: IssuedCertificate, kind: str, unit: str | None,
                     address: str) -> CertInfo:
        key_pem = await self._run(dump_private_key, issued.key, self._need_passphrase())
        cert = issued.certificate
        serial = format_serial(cert.serial_number)
        async with self.pool.acquire() as conn, conn.transaction():
            await repo.insert_certificate(
                conn, serial=serial, kind=kind, unit_code=unit, address=address,
                subject=cert.subject.rfc4514_string(),
                cert_der=cert.public_bytes(serialization.Encoding.DER), key_pem=key_pem,
                key_type=self.algorithm.value, not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc)
            row = await repo.get_certificate(conn, serial)
        assert row is not None
        self._keys[serial] = issued.key
        return CertInfo.from_row(row)

    async def issue_seal(self, unit: str, *, validity: timedelta = timedelta(days=730),
                         now: datetime | None = None,
                         email_protection: bool = True) -> CertInfo:
        """A unit's electronic seal (SAN <unit>.docs@domain); earlier seals stay valid."""
        code = check_unit_code(unit)
        async with self.pool.acquire() as conn:
            name = await repo.unit_name(conn, code)
        if name is None:
            raise NotFound(f"unknown unit {code!r}")
        ca = await self.load_ca()
        issued = await self._run(issue_unit_seal, ca, unit_code=code, unit_name=name,
                                 domain=self.domain, now=now or datetime.now(UTC),
                                 organization=self.organization, crl_url=self.crl_url,
                                 ocsp_url=self.ocsp_url, validity=validity,
                                 algorithm=self.algorithm, email_protection=email_protection)
        return await self._store(issued, "seal", code, unit_docs_address(code, self.domain))

    async def issue_personal(self, address: str) -> CertInfo:
        """A personal S/MIME certificate for an account (for Thunderbird/Outlook)."""
        addr = normalise_address(address, self.domain)
        async with self.pool.acquire() as conn:
            ident = await repo.account_identity(conn, addr)
        if ident is None:
            raise NotFound(f"unknown account {addr}")
        ca = await self.load_ca()
        issued = await self._run(issue_personal_certificate, ca, email=addr, full_name=ident[0],
                                 now=datetime.now(UTC), organization=self.organization,
                                 unit_code=ident[1], crl_url=self.crl_url,
                                 ocsp_url=self.ocsp_url, algorithm=self.algorithm)
        return await self._store(issued, "personal", ident[1], addr)

    async def export_p12(self, address: str, password: bytes, *, legacy: bool = False) -> bytes:
        """PKCS#12 of the newest valid personal certificate of ``address`` with its key."""
        weak = passphrase_problem(password, min_length=10)
        if weak is not None:  # issue #11 item 9: the file carries the private key
            raise Invalid(f"the export password is too weak: {weak}")
        addr = normalise_address(address, self.domain)
        async with self.pool.acquire() as conn:
            found = await repo.current_with_key(conn, kind="personal", address=addr)
        if found is None:
            raise NotFound(f"{addr} has no valid personal certificate: run `cxgw cert issue`")
        row, key_pem = found
        key = await self._decrypt(key_pem)
        await self._upgrade(key, key_pem, row.serial)
        cert = x509.load_der_x509_certificate(row.cert_der)
        chain = [await self.ca_certificate()]
        try:
            return await self._run(export_pkcs12, key, cert, password, chain=chain,
                                   legacy=legacy)
        except ValueError as exc:
            raise Invalid(str(exc)) from None

    async def revoke(self, serial: str, reason: str = "unspecified",
                     compromised_at: datetime | None = None) -> CertInfo:
        """Revoke a certificate and destroy its key (issue #11 item 9). With reason
        key-compromise, ``compromised_at`` (RFC 5280 §5.3.2 invalidity date) says since
        when documents it sealed are suspect; without it, all of them are."""
        code = parse_reason(reason)
        key = parse_serial(serial)
        if compromised_at is not None and code is not RevocationReason.KEY_COMPROMISE:
            raise Invalid("a compromise date goes with reason key-compromise only")
        async with self.pool.acquire() as conn, conn.transaction():
            row = await repo.get_certificate(conn, key)
            if row is None:
                raise NotFound(f"no certificate with serial {key}")
            if row.status == "revoked":
                raise Conflict(f"certificate {key} is already revoked")
            await repo.revoke(conn, key, datetime.now(UTC), int(code))
            await repo.destroy_key(conn, key)
            if compromised_at is not None:
                await repo.set_compromised_at(conn, key, compromised_at)
            row = await repo.get_certificate(conn, key)
        assert row is not None
        self._keys.pop(key, None)
        return CertInfo.from_row(row)

    async def certificates(self, *, kind: str | None = None, unit: str | None = None,
                   address: str | None = None) -> list[CertInfo]:
        async with self.pool.acquire() as conn:
            rows = await repo.list_certificates(conn, kind=kind, unit=unit, address=address)
        return [CertInfo.from_row(r) for r in rows]

    async def compromised(self) -> list[tuple[str, datetime | None]]:
        """(serial, compromise date or None) of every key-compromise revocation."""
        async with self.pool.acquire() as conn:
            return await repo.compromised(conn)

    async def issued_rows(self) -> list[repo.CertRow]:
        """Every certificate this CA issued, with its DER (the verifier's table)."""
        async with self.pool.acquire() as conn:
            return await repo.list_certificates(conn)

    async def seal_key(self, unit: str) -> SealKey:
        """The unit's current seal with its key (decrypted once, then kept in memory)."""
        code = check_unit_code(unit)
        async with self.pool.acquire() as conn:
            found = await repo.current_with_key(conn, kind="seal", unit=code)
        if found is None:
            raise NotFound(f"unit {code} has no valid seal: run `cxgw seal issue {code}`")
        row, key_pem = found
        key = self._keys.get(row.serial)
        if key is None:
            key = await self._decrypt(key_pem)
            await self._upgrade(key, key_pem, row.serial)
            self._keys[row.serial] = key
        return SealKey(key, x509.load_der_x509_certificate(row.cert_der),
                       await self.ca_certificate())

    # ---- revocation publishing -------------------------------------------------------
    async def revocations(self) -> list[Revocation]:
        async with self.pool.acquire() as conn:
            rows = await repo.revocations(conn)
        return [Revocation(int(s, 16), at, RevocationReason(r)) for s, at, r in rows]

    async def crl(self, now: datetime | None = None) -> x509.CertificateRevocationList:
        """The current CRL, rebuilt when a certificate changes or a day has passed."""
        now = now or datetime.now(UTC)
        rev = await self.revision()
        if rev == 0:
            raise NotFound("there is no CA yet")
        cached = self._crl
        if cached is not None and cached[0] == rev and now - cached[1] < timedelta(days=1):
            return cached[2]
        ca = await self.load_ca()
        revoked = await self.revocations()
        # The CA revision only grows, so it serves as the CRL number (RFC 5280 §5.2.3).
        crl = await self._run(build_crl, ca, revoked, now=now, crl_number=rev,
                              next_update=CRL_VALIDITY)
        self._crl = (rev, now, crl)
        return crl

    async def status_of(self, serial: int) -> CertStatus:
        async with self.pool.acquire() as conn:
            row = await repo.get_certificate(conn, format_serial(serial))
        if row is None:
            return CertStatus(Status.UNKNOWN)
        if row.status == "revoked":
            return CertStatus(Status.REVOKED, row.revoked_at, RevocationReason(row.reason or 0))
        return CertStatus(Status.GOOD)

    async def statuses(self) -> dict[int, CertStatus]:
        """Every certificate this CA issued, by serial: what the OCSP responder would say.

        The verifier answers OCSP for our own CA in-process from this snapshot (taken
        once per CA revision), so no HTTP round trip is needed per arriving document.
        """
        async with self.pool.acquire() as conn:
            rows = await repo.list_certificates(conn)
        out: dict[int, CertStatus] = {}
        for r in rows:
            if r.status == "revoked":
                out[int(r.serial, 16)] = CertStatus(Status.REVOKED, r.revoked_at,
                                                    RevocationReason(r.reason or 0))
            else:
                out[int(r.serial, 16)] = CertStatus(Status.GOOD)
        return out

    async def ocsp_response(self, request_der: bytes, now: datetime | None = None) -> bytes:
        """Answer one DER OCSP request (RFC 6960) from the database."""
        now = now or datetime.now(UTC)
        ca = await self.load_ca()
        try:
            serial = x509_ocsp.load_der_ocsp_request(request_der).serial_number
        except ValueError:
            status = CertStatus(Status.UNKNOWN)  # build_ocsp_response answers malformedRequest
        else:
            status = await self.status_of(serial)
        return await self._run(build_ocsp_response, ca, request_der, lambda _s: status, now=now)
