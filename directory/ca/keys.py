"""Key generation and passphrase-protected key serialisation for the city CA.

Pure functions: keys and bytes go in and out, nothing is written to disk here.
"""

from __future__ import annotations

import os
import secrets
from enum import StrEnum

from asn1crypto import keys as asn1_keys
from asn1crypto import pem as asn1_pem
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

PBKDF2_ITERATIONS = 600_000  # OWASP Password Storage Cheat Sheet, PBKDF2-HMAC-SHA256

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


def dump_private_key(key: PrivateKey, passphrase: bytes,
                     iterations: int = PBKDF2_ITERATIONS) -> bytes:
    """PKCS#8 EncryptedPrivateKeyInfo PEM (RFC 5958): PBES2 (RFC 8018 §6.2) with
    PBKDF2-HMAC-SHA256 at 600,000 iterations (OWASP) and AES-256-CBC. cryptography's
    BestAvailableEncryption uses only 2,048 iterations; OpenSSL reads this form."""
    if not passphrase:
        raise ValueError("a CA or seal key is never stored without a passphrase")
    salt, iv = os.urandom(16), os.urandom(16)
    kek = PBKDF2HMAC(hashes.SHA256(), 32, salt, iterations).derive(passphrase)
    plain = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    padder = sym_padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    enc = Cipher(algorithms.AES(kek), modes.CBC(iv)).encryptor()
    data = enc.update(padded) + enc.finalize()
    info = asn1_keys.EncryptedPrivateKeyInfo({
        "encryption_algorithm": {"algorithm": "pbes2", "parameters": {
            "key_derivation_func": {"algorithm": "pbkdf2", "parameters": {
                "salt": ("specified", salt), "iteration_count": iterations,
                "prf": {"algorithm": "sha256", "parameters": None}}},
            "encryption_scheme": {"algorithm": "aes256_cbc", "parameters": iv}}},
        "encrypted_data": data})
    return asn1_pem.armor("ENCRYPTED PRIVATE KEY", info.dump())


def kdf_iterations(pem: bytes) -> int:
    """The PBKDF2 iteration count of a stored key (0 when not PBES2/PBKDF2)."""
    _, _, der = asn1_pem.unarmor(pem)
    alg = asn1_keys.EncryptedPrivateKeyInfo.load(der)["encryption_algorithm"]
    if alg["algorithm"].native != "pbes2":
        return 0
    kdf = alg["parameters"]["key_derivation_func"]
    return int(kdf["parameters"]["iteration_count"].native) if kdf["algorithm"].native == \
        "pbkdf2" else 0


def passphrase_problem(passphrase: bytes | str, min_length: int = 12) -> str | None:
    """Why a passphrase is too weak (CA passphrase, PKCS#12 export password), or None.

    At least ``min_length`` characters from at least three classes (lower, upper,
    digits, other), and not one repeated character (NIST SP 800-63B spirit: length first).
    """
    text = passphrase.decode("utf-8", "replace") if isinstance(passphrase, bytes) \
        else passphrase
    if len(text) < min_length:
        return f"at least {min_length} characters"
    classes = sum((any(c.islower() for c in text), any(c.isupper() for c in text),
                   any(c.isdigit() for c in text), any(not c.isalnum() for c in text)))
    if classes < 3 and len(text) < 20:
        return "mix at least three of lower case, upper case, digits and symbols" \
               " (or use 20 characters or more)"
    if len(set(text)) < 5:
        return "too few different characters"
    return None


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
