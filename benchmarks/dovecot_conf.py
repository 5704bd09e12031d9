"""The Dovecot configuration our benchmarks compare against: IMAPS only on one loopback
port, Maildir under `d/mail`, passwd-file users, TLS required (the same shape as ours)."""

from __future__ import annotations

from pathlib import Path


def dovecot_config(d: Path, port: int, crt: Path, key: Path, *, auth_plain: bool = False,
                   min_avail: int = 0, compress: bool = False) -> str:
    """``compress``: offer COMPRESS=DEFLATE (the imap_zlib plugin), as we do: a client
    that uses it (mbsync) then compresses against both servers."""
    extra_imap = ("protocol imap {\n  mail_plugins = $mail_plugins imap_zlib\n}\n"
                  if compress else "")
    extra_auth = "auth_mechanisms = plain\n" if auth_plain else ""
    extra_login = f"  process_min_avail = {min_avail}\n" if min_avail else ""
    return f"""
protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/run
log_path = {d}/dovecot.log
ssl = required
ssl_cert = <{crt}
ssl_key = <{key}
disable_plaintext_auth = yes
{extra_auth}first_valid_uid = 8
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = {d}/users
}}
userdb {{
  driver = passwd-file
  args = {d}/users
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
{extra_login}}}
{extra_imap}"""
