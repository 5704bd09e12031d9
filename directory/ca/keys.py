"""Key generation and passphrase-protected key serialisation for the city CA.

Pure functions: keys and bytes go in and out, nothing is written to disk here.
"""

from __future__ import annotations

import secrets
from enum import StrEnum

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class KeyAlgorithm(StrEnum):
    RSA2048 = "rsa2048"
    RSA3072 = "rsa3072"
    ECDSA_P256 = "ecdsa-p256"


def generate_key(algorithm: KeyAlgorithm = KeyAlgorithm.RSA2048) -> PrivateKey:
    """A fresh private key of the given algorithm."""
    if algorithm is KeyAlgorithm.RSA2048:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if algorithm is KeyAlgorithm.RSA3072:
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if algorithm is KeyAlgorithm.ECDSA_P256:
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unsupported key algorithm {algorithm!r}")


def dump_private_key(key: PrivateKey, passphrase: bytes) -> bytes:
    """PKCS#8 PEM encrypted with the best algorithm cryptography offers."""
    if not passphrase:
        raise ValueError("a CA or seal key is never stored without a passphrase")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def load_private_key(pem: bytes, passphrase: bytes) -> PrivateKey:
    """Load a key written by :func:`dump_private_key`; ValueError on a bad passphrase."""
    key = serialization.load_pem_private_key(pem, password=passphrase)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"unsupported key type {type(key).__name__}")
    return key


def random_serial() -> int:
    """A positive random serial of 64+ bits (RFC 5280 §4.1.2.2: at most 20 octets).

    CA/B Forum asks for at least 64 bits of CSPRNG output; we take 127 bits and force
    the top bit so the DER INTEGER is always 16 octets and never negative.
    """
    return secrets.randbits(127) | (1 << 126)
