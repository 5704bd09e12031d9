"""XEP-0115 entity capabilities: the verification string of an identity/feature set."""

from __future__ import annotations

import base64
import hashlib

NODE = "https://cx-gateway.example/caps"


def verification_string(identities: list[tuple[str, str, str]], features: list[str]) -> str:
    """XEP-0115 §5.1 (no extended forms): base64(sha-1(S))."""
    parts = [f"{cat}/{typ}//{name}<" for cat, typ, name in sorted(identities)]
    parts += [f"{f}<" for f in sorted(set(features))]
    return base64.b64encode(hashlib.sha1("".join(parts).encode("utf-8")).digest()).decode()
