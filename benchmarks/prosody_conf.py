"""The Prosody configuration our benchmarks compare against: c2s on one loopback port,
STARTTLS required, plain-text accounts, no s2s, no offline storage, no rate limits."""

from __future__ import annotations

from pathlib import Path


def prosody_config(d: Path, port: int, domain: str, key: Path, crt: Path,
                   *, plain_auth_needs_tls: bool = False) -> str:
    extra = "allow_unencrypted_plain_auth = false\n" if plain_auth_needs_tls else ""
    return f"""
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
daemonize = false
run_as_root = true
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
s2s_ports = {{ }}
c2s_require_encryption = true
{extra}authentication = "internal_plain"
log = {{ error = "{d}/prosody.err" }}
modules_enabled = {{ "roster", "saslauth", "tls", "disco", "ping", "presence", "message" }}
modules_disabled = {{ "s2s", "offline", "c2s_limits", "limits" }}
VirtualHost "{domain}"
  ssl = {{ key = "{key}"; certificate = "{crt}"; }}
"""
