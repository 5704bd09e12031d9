"""The Prosody configuration our benchmarks compare against: c2s on one loopback port,
STARTTLS required, plain-text accounts, no s2s, no offline storage, no rate limits.

`nagle=False` sets TCP_NODELAY as we do (Prosody's default keeps Nagle on); `mam=True`
archives every message with mod_mam in SQL storage: PostgreSQL (lua-dbi-postgresql) when
`pg_socket_dir` names a server's socket directory, else SQLite (lua-dbi-sqlite3)."""

from __future__ import annotations

from pathlib import Path


def prosody_config(d: Path, port: int, domain: str, key: Path, crt: Path,
                   *, plain_auth_needs_tls: bool = False, nagle: bool = True,
                   mam: bool = False, pg_socket_dir: Path | None = None) -> str:
    extra = "allow_unencrypted_plain_auth = false\n" if plain_auth_needs_tls else ""
    if not nagle:
        extra += "network_settings = { nagle = false }\n"
    if mam:
        sql = (f'{{ driver = "PostgreSQL", database = "prosody", username = "postgres", '
               f'password = "", host = "{pg_socket_dir}" }}' if pg_socket_dir else
               f'{{ driver = "SQLite3", database = "{d}/prosody.sqlite" }}')
        extra += (f'storage = {{ archive = "sql" }}\nsql = {sql}\n'
                  'default_archive_policy = true\narchive_expires_after = "never"\n')
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
modules_enabled = {{ "roster", "saslauth", "tls", "disco", "ping", "presence", "message"{', "mam"' if mam else ""} }}
modules_disabled = {{ "s2s", "offline", "c2s_limits", "limits" }}
VirtualHost "{domain}"
  ssl = {{ key = "{key}"; certificate = "{crt}"; }}
"""
