"""SCRAM keys and the server side of a SCRAM exchange (RFC 5802, RFC 7677). Pure; no I/O.

Passwords are never stored: only (salt, iterations, StoredKey, ServerKey) per hash, which is
enough to verify PLAIN/LOGIN (recompute the keys) and to run SCRAM as the server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import unicodedata
from dataclasses import dataclass

HASHES = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}


@dataclass(frozen=True)
class ScramKeys:
    mechanism: str  # "SCRAM-SHA-1" or "SCRAM-SHA-256"
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


class ScramError(Exception):
    """A SCRAM exchange failed; `code` is the RFC 5802 server-error value."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def saslprep(text: str) -> str:
    """A practical SASLprep (RFC 4013): map non-ASCII spaces to space, drop 'mapped to nothing'
    characters, NFKC-normalise, refuse control characters."""
    mapped = []
    for ch in text:
        if ch in "\u00ad\u034f\u1806\u180b\u180c\u180d\u200b\u200c\u200d\u2060\ufe00\ufeff":
            continue
        if unicodedata.category(ch) == "Zs":
            ch = " "
        mapped.append(ch)
    out = unicodedata.normalize("NFKC", "".join(mapped))
    for ch in out:
        if unicodedata.category(ch) == "Cc" or unicodedata.category(ch) == "Cs":
            raise ValueError("prohibited character in password")
    return out


def _h(name: str, data: bytes) -> bytes:
    return hashlib.new(name, data).digest()


def _hmac(name: str, key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, name).digest()


def salted_password(mechanism: str, password: str, salt: bytes, iterations: int) -> bytes:
    """Hi(Normalize(password), salt, i) (RFC 5802 §2.2)."""
    name = HASHES[mechanism]
    return hashlib.pbkdf2_hmac(name, saslprep(password).encode("utf-8"), salt, iterations)


def derive_keys(mechanism: str, password: str, salt: bytes | None = None,
                iterations: int = 4096) -> ScramKeys:
    """StoredKey/ServerKey for a password (RFC 5802 §3)."""
    name = HASHES[mechanism]
    salt = salt if salt is not None else os.urandom(16)
    sp = salted_password(mechanism, password, salt, iterations)
    client_key = _hmac(name, sp, b"Client Key")
    return ScramKeys(mechanism, salt, iterations, _h(name, client_key),
                     _hmac(name, sp, b"Server Key"))


def check_password(keys: ScramKeys, password: str) -> bool:
    """Verify a plaintext password (PLAIN, LOGIN) against stored keys, in constant time."""
    try:
        sp = salted_password(keys.mechanism, password, keys.salt, keys.iterations)
    except ValueError:
        return False
    name = HASHES[keys.mechanism]
    stored = _h(name, _hmac(name, sp, b"Client Key"))
    return hmac.compare_digest(stored, keys.stored_key)


def _parse_attrs(msg: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in msg.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramError("invalid-encoding")
        out.setdefault(part[0], part[2:])
    return out


def _decode_saslname(name: str) -> str:
    # RFC 5802 §5.1: "=2C" is ",", "=3D" is "="; any other "=" is invalid.
    out = []
    i = 0
    while i < len(name):
        if name[i] == "=":
            code = name[i:i + 3]
            if code == "=2C":
                out.append(",")
            elif code == "=3D":
                out.append("=")
            else:
                raise ScramError("invalid-username-encoding")
            i += 3
        else:
            out.append(name[i])
            i += 1
    return "".join(out)


class ScramServer:
    """The server side of one SCRAM exchange (no channel binding: "n" or "y" gs2 flags).

    Usage: ``user = s.client_first(msg)``; look up keys for `user`; ``s.server_first(keys)``;
    ``s.client_final(msg)`` returns server-final or raises ScramError.
    """

    def __init__(self, mechanism: str, nonce: str | None = None) -> None:
        if mechanism not in HASHES:
            raise ValueError(mechanism)
        self.mechanism = mechanism
        self._hash = HASHES[mechanism]
        self._server_nonce = nonce or base64.b64encode(os.urandom(18)).decode()
        self.username = ""
        self.authzid = ""
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._keys: ScramKeys | None = None

    def client_first(self, message: bytes) -> str:
        """Parse client-first-message (RFC 5802 §7); return the username."""
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("invalid-encoding") from None
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise ScramError("invalid-encoding")
        cbind, authz, bare = parts
        if cbind.startswith("p="):
            raise ScramError("channel-binding-not-supported")
        if cbind not in ("n", "y"):
            raise ScramError("invalid-encoding")
        if authz and not authz.startswith("a="):
            raise ScramError("invalid-encoding")
        self.authzid = _decode_saslname(authz[2:]) if authz else ""
        self._gs2_header = f"{cbind},{authz},"
        attrs = _parse_attrs(bare)
        if "m" in attrs:
            raise ScramError("extensions-not-supported")
        if "n" not in attrs or "r" not in attrs or not attrs["r"]:
            raise ScramError("invalid-encoding")
        self.username = _decode_saslname(attrs["n"])
        self._client_first_bare = bare
        self._nonce = attrs["r"] + self._server_nonce
        return self.username

    def server_first(self, keys: ScramKeys) -> bytes:
        """The server-first-message for these stored keys."""
        self._keys = keys
        salt = base64.b64encode(keys.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={keys.iterations}"
        return self._server_first.encode()

    def client_final(self, message: bytes) -> bytes:
        """Verify client-final-message; return server-final-message (v=...)."""
        if self._keys is None:
            raise ScramError("other-error")
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("invalid-encoding") from None
        without_proof, sep, proof_part = text.rpartition(",p=")
        if not sep:
            raise ScramError("invalid-encoding")
        attrs = _parse_attrs(without_proof)
        expected_cb = base64.b64encode(self._gs2_header.encode()).decode()
        if attrs.get("c") != expected_cb:
            raise ScramError("channel-bindings-dont-match")
        if attrs.get("r") != self._nonce:
            raise ScramError("other-error")
        try:
            proof = base64.b64decode(proof_part, validate=True)
        except ValueError:
            raise ScramError("invalid-proof") from None
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = _hmac(self._hash, self._keys.stored_key, auth_message)
        if len(proof) != len(signature):
            raise ScramError("invalid-proof")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(_h(self._hash, client_key), self._keys.stored_key):
            raise ScramError("invalid-proof")
        server_sig = _hmac(self._hash, self._keys.server_key, auth_message)
        return b"v=" + base64.b64encode(server_sig)


def client_proof(mechanism: str, password: str, client_first_bare: str, server_first: str,
                 client_final_without_proof: str) -> tuple[str, str]:
    """Client-side helper (tests, load harness): return (proof_b64, expected_server_sig_b64)."""
    name = HASHES[mechanism]
    attrs = _parse_attrs(server_first)
    salt = base64.b64decode(attrs["s"])
    sp = salted_password(mechanism, password, salt, int(attrs["i"]))
    client_key = _hmac(name, sp, b"Client Key")
    stored = _h(name, client_key)
    auth = f"{client_first_bare},{server_first},{client_final_without_proof}".encode()
    sig = _hmac(name, stored, auth)
    proof = bytes(a ^ b for a, b in zip(client_key, sig, strict=True))
    server_sig = _hmac(name, _hmac(name, sp, b"Server Key"), auth)
    return base64.b64encode(proof).decode(), base64.b64encode(server_sig).decode()
