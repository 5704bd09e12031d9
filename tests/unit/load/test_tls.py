"""smtp-burst over implicit TLS and STARTTLS against an aiosmtpd sink with a throwaway cert."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.unit.load.conftest import Servers, SinkHandler
from tests.unit.load.test_smtp_scenarios import assert_balanced, run


def server_context(tmp_path: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1)).sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    return ctx


@pytest.mark.parametrize("mode", ["--tls", "--starttls"])
def test_tls_modes(servers: Servers, tmp_path: Path, mode: str) -> None:
    ctx = server_context(tmp_path)
    handler = SinkHandler()
    if mode == "--tls":
        async def start() -> int:
            srv = await servers.loop.create_server(lambda: SMTP(handler), "127.0.0.1", 0, ssl=ctx)
            servers.servers.append(srv)
            return int(srv.sockets[0].getsockname()[1])

        import asyncio

        port = asyncio.run_coroutine_threadsafe(start(), servers.loop).result(5)
    else:
        port = servers.start(lambda: SMTP(handler, tls_context=ctx))
    rc, r = run(["smtp-burst", "--target", f"127.0.0.1:{port}", "--count", "4", mode,
                 "--insecure", "--rcpt", "a@x.test", "--reuse"], tmp_path)
    assert rc == 0, r
    assert (r["sent"], r["delivered"]) == (4, 4)
    assert_balanced(r)
    # verification on: the self-signed certificate is refused and counted as `tls`
    rc, r = run(["smtp-burst", "--target", f"127.0.0.1:{port}", "--count", "2", mode,
                 "--rcpt", "a@x.test"], tmp_path)
    assert rc == 1
    assert r["errors"] == {"tls": 2}
    assert_balanced(r)
