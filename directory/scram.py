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
#: Channel binding types we can produce on the server (RFC 5929 §4). Python's ssl exposes
#: only tls-unique (undefined for TLS 1.3) and no keying-material exporter, so tls-exporter
#: (RFC 9266) is out of reach; tls-server-end-point needs only our own certificate.
CB_TYPES = ("tls-server-end-point",)


def base_mechanism(mechanism: str) -> str:
    """``SCRAM-SHA-256-PLUS`` → ``SCRAM-SHA-256`` (the keys are the same, RFC 5802 §4)."""
    return mechanism[:-5] if mechanism.endswith("-PLUS") else mechanism


def tls_server_end_point(cert_der: bytes) -> bytes:
    """RFC 5929 §4.1: the hash of the server certificate, with the certificate's signature
    hash, or SHA-256 when that is MD5 or SHA-1 (or unknown, e.g. Ed25519)."""
    from cryptography import x509  # only where a certificate is at hand

    cert = x509.load_der_x509_certificate(cert_der)
    algo = cert.signature_hash_algorithm
    name = algo.name if algo is not None else "sha256"
    if name in ("md5", "sha1"):
        name = "sha256"
    return hashlib.new(name, cert_der).digest()


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
    """The server side of one SCRAM exchange (RFC 5802 §5), with or without channel
    binding (the ``-PLUS`` mechanisms, RFC 5802 §6).

    Usage: ``user = s.client_first(msg)``; look up keys for `user`; ``s.server_first(keys)``;
    ``s.client_final(msg)`` parses the final message (raises ScramError); ``s.verify()``
    checks the proof and returns server-final or None.
    `binding` is (type, data) of this connection's channel, None if there is no TLS;
    `plus_offered` says whether -PLUS was advertised (then a "y" flag is a downgrade).
    """

    def __init__(self, mechanism: str, nonce: str | None = None, *,
                 binding: tuple[str, bytes] | None = None, plus_offered: bool = False) -> None:
        self.plus = mechanism.endswith("-PLUS")
        base = base_mechanism(mechanism)
        if base not in HASHES or (self.plus and binding is None):
            raise ValueError(mechanism)
        self.mechanism = base
        self._hash = HASHES[base]
        self._binding = binding
        self._plus_offered = plus_offered
        self._server_nonce = nonce or base64.b64encode(os.urandom(18)).decode()
        self.username = ""
        self.authzid = ""
        self._gs2_header = ""
        self._cb_data = b""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._keys: ScramKeys | None = None
        self._auth_message = b""
        self._proof = b""

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
            # RFC 5802 §6: a binding only with a -PLUS mechanism, of a type we support.
            if not self.plus:
                raise ScramError("channel-binding-not-supported")
            assert self._binding is not None
            if cbind[2:] != self._binding[0]:
                raise ScramError("unsupported-channel-binding-type")
            self._cb_data = self._binding[1]
        elif self.plus:
            raise ScramError("channel-binding-not-supported")  # -PLUS requires p=
        elif cbind == "y":
            # RFC 5802 §6: the client thinks we lack binding; we advertised it: downgrade.
            if self._plus_offered:
                raise ScramError("server-does-support-channel-binding")
        elif cbind != "n":
            raise ScramError("invalid-encoding")
        if authz and not authz.startswith("a="):
            raise ScramError("invalid-encoding")
        self.authzid = _decode_saslname(authz[2:]) if authz else ""
        self._gs2_header = f"{cbind},{authz},"
        attrs = _parse_attrs(bare)
        if "m" in attrs:
            raise ScramError("extensions-not-supported")
        if "n" not in attrs or "r" not in attrs or not attrs["r"] or not attrs["n"]:
            raise ScramError("invalid-encoding")
        if any(ch in attrs["r"] for ch in ", ") or not attrs["r"].isprintable():
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

    def parse_final(self, message: bytes) -> None:
        """Parse client-final-message and check binding and nonce (RFC 5802 §5.1)."""
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
        expected_cb = base64.b64encode(self._gs2_header.encode() + self._cb_data).decode()
        if attrs.get("c") != expected_cb:
            raise ScramError("channel-bindings-dont-match")
        if attrs.get("r") != self._nonce:
            raise ScramError("other-error")
        try:
            self._proof = base64.b64decode(proof_part, validate=True)
        except ValueError:
            raise ScramError("invalid-proof") from None
        self._auth_message = (f"{self._client_first_bare},{self._server_first},"
                              f"{without_proof}").encode()

    def verify(self) -> bytes | None:
        """Check the parsed proof against the keys: server-final (``v=...``) or None."""
        keys = self._keys
        if keys is None or not self._auth_message:
            return None
        signature = _hmac(self._hash, keys.stored_key, self._auth_message)
        if len(self._proof) != len(signature):
            return None
        client_key = bytes(a ^ b for a, b in zip(self._proof, signature, strict=True))
        if not hmac.compare_digest(_h(self._hash, client_key), keys.stored_key):
            return None
        server_sig = _hmac(self._hash, keys.server_key, self._auth_message)
        return b"v=" + base64.b64encode(server_sig)

    def client_final(self, message: bytes) -> bytes:
        """Parse and verify client-final-message; return server-final-message (v=...)."""
        self.parse_final(message)
        final = self.verify()
        if final is None:
            raise ScramError("invalid-proof")
        return final


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
