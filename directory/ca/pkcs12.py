"""PKCS#12 export of a key and its certificate for Thunderbird, Outlook and Windows."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    PrivateFormat,
    pkcs12,
)

from .keys import PrivateKey


@dataclass(frozen=True)
class Pkcs12Bundle:
    key: PrivateKey
    certificate: x509.Certificate
    chain: list[x509.Certificate]


def export_pkcs12(key: PrivateKey, certificate: x509.Certificate, password: bytes, *,
                  chain: list[x509.Certificate] | None = None, friendly_name: str | None = None,
                  legacy: bool = False) -> bytes:
    """DER PKCS#12 with the key, its certificate and the CA chain.

    The default uses PBES2/AES-256 (Thunderbird, Windows 10+, macOS). ``legacy=True``
    uses PBE-SHA1-3DES with a SHA-1 MAC for old Outlook / Windows 7 clients.
    """
    if not password:
        raise ValueError("a PKCS#12 export needs a password")
    if legacy:
        encryption = (
            PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(50000)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())
            .build(password)
        )
    else:
        encryption = BestAvailableEncryption(password)
    name = (friendly_name or _default_name(certificate)).encode("utf-8")
    return pkcs12.serialize_key_and_certificates(name, key, certificate, chain or None,
                                                 encryption)


def load_pkcs12(data: bytes, password: bytes) -> Pkcs12Bundle:
    """Load a bundle written by :func:`export_pkcs12` (ValueError on a bad password)."""
    key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    if key is None or cert is None:
        raise ValueError("PKCS#12 bundle holds no key and certificate")
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"unsupported key type {type(key).__name__}")
    return Pkcs12Bundle(key, cert, list(extra))


def _default_name(certificate: x509.Certificate) -> str:
    cns = certificate.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    value = cns[0].value if cns else "certificate"
    return value if isinstance(value, str) else value.decode("utf-8", "replace")
