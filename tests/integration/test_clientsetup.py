"""Clients set themselves up (issue 15 items 1 and 5) against the running server: the
autoconfig documents fetched over http and https are parsed the way Thunderbird, Outlook
and iOS read them, and the settings they name log in with real clients (imaplib, smtplib,
poplib), verifying the self-signed certificate *by the public host name*; the MTA-STS
policy is served; `cxgw dns records --json` names the same ports."""

from __future__ import annotations

import asyncio
import imaplib
import json
import plistlib
import poplib
import smtplib
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from gateway.clientsetup import AUTODISCOVER_OUTLOOK as OL
from gateway.clientsetup import AUTODISCOVER_REQ
from tests.integration.mailutil import PASSWORD, seed_city
from tests.netutil import free_port

pytestmark = pytest.mark.integration
ROLES = ("imap", "imaps", "pop3", "pop3s", "submission", "submissions", "http", "https")
NAMES = ["mail.cx.example", "imap.cx.example"]



@pytest.fixture
def cfg_overrides() -> dict[str, dict[str, object]]:
    # The documents name the configured ports, so the listeners need known ones here.
    return {"listen": {r: f"127.0.0.1:{free_port()}" for r in ROLES},
            "server": {"public_hostnames": NAMES}}


def server_ctx(srv: Any) -> ssl.SSLContext:
    """Trusts only the server's certificate, and checks the host name."""
    ctx = ssl.create_default_context(cafile=str(srv.services.cfg.state_path / "tls" / "server.crt"))
    ctx.check_hostname = True
    return ctx


def get(url: str, ctx: ssl.SSLContext | None = None, data: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), ""


def handshake(ctx: ssl.SSLContext, port: int, name: str) -> bytes:
    """A TLS handshake to 127.0.0.1 verifying the certificate under `name`."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname=name) as tls:
        tls.settimeout(2)
        try:
            return tls.recv(100)
        except TimeoutError:  # HTTP: the server waits for the request
            return b""


async def test_thunderbird_autoconfig_then_login(server: Any) -> None:
    await seed_city(server)
    http = f"http://127.0.0.1:{server.ports['http']}"
    for path in ("/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml"):
        status, body, ctype = await asyncio.to_thread(
            get, f"{http}{path}?emailaddress=zhang.san%40cx.example")
        assert status == 200 and ctype.startswith("application/xml"), body
        root = ET.fromstring(body)
        assert root.findtext("emailProvider/domain") == "cx.example"
    status, _, _ = await asyncio.to_thread(
        get, f"{http}/mail/config-v1.1.xml?emailaddress=x%40other.example")
    assert status == 404
    servers = {(el.get("type"), el.findtext("socketType")): el
               for el in [*root.iter("incomingServer"), *root.iter("outgoingServer")]}
    ports = {k: int(v.findtext("port") or 0) for k, v in servers.items()}
    assert ports == {("imap", "SSL"): server.ports["imaps"],
                     ("imap", "STARTTLS"): server.ports["imap"],
                     ("pop3", "SSL"): server.ports["pop3s"],
                     ("pop3", "STARTTLS"): server.ports["pop3"],
                     ("smtp", "SSL"): server.ports["submissions"],
                     ("smtp", "STARTTLS"): server.ports["submission"]}
    host = servers[("imap", "SSL")].findtext("hostname")
    user = servers[("imap", "SSL")].findtext("username")
    assert host == "mail.cx.example" and user == "zhang.san@cx.example"
    ctx = server_ctx(server)

    def login_everywhere() -> None:
        # Connect to 127.0.0.1 but verify the certificate under the advertised name,
        # as offlineimap and fetchmail do.
        for name in NAMES:
            assert handshake(ctx, ports[("imap", "SSL")], name).startswith(b"* OK")
        ctx.check_hostname = False  # the library clients connect to 127.0.0.1 ...
        ctx.verify_mode = ssl.CERT_REQUIRED  # ... but still verify the chain
        imap = imaplib.IMAP4("127.0.0.1", ports[("imap", "STARTTLS")], timeout=10)
        imap.starttls(ctx)
        imap.login(user or "", PASSWORD)
        imap.logout()
        smtp = smtplib.SMTP("127.0.0.1", ports[("smtp", "STARTTLS")], timeout=10)
        smtp.starttls(context=ctx)
        smtp.login(user or "", PASSWORD)
        smtp.quit()
        pop = poplib.POP3_SSL("127.0.0.1", ports[("pop3", "SSL")], timeout=10, context=ctx)
        pop.user(user or "")
        pop.pass_(PASSWORD)
        pop.quit()

    await asyncio.to_thread(login_everywhere)


async def test_certificate_names_and_https(server: Any) -> None:
    ctx = server_ctx(server)
    https = f"https://127.0.0.1:{server.ports['https']}"
    # The https listener answers under every public name and the autoconfig names.
    for name in [*NAMES, "autoconfig.cx.example", "autodiscover.cx.example",
                 "mta-sts.cx.example"]:
        await asyncio.to_thread(handshake, ctx, server.ports["https"], name)
    ctx.check_hostname = False
    status, body, _ = await asyncio.to_thread(get, f"{https}/.well-known/mta-sts.txt", ctx)
    assert status == 200
    lines = body.decode().split("\r\n")
    assert lines[0] == "version: STSv1" and "mx: imap.cx.example" in lines


async def test_outlook_autodiscover_post(server: Any) -> None:
    ctx = server_ctx(server)
    ctx.check_hostname = False
    req = (f"<?xml version='1.0'?><Autodiscover xmlns='{AUTODISCOVER_REQ}'><Request>"
           "<EMailAddress>li.si@cx.example</EMailAddress><AcceptableResponseSchema>"
           f"{OL}</AcceptableResponseSchema></Request></Autodiscover>").encode()
    for path in ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"):
        status, body, _ = await asyncio.to_thread(
            get, f"https://127.0.0.1:{server.ports['https']}{path}", ctx, req,
            {"Content-Type": "text/xml"})
        assert status == 200, body
        root = ET.fromstring(body)
        protos = {(p.findtext(f"{{{OL}}}Type"), p.findtext(f"{{{OL}}}Encryption")):
                  int(p.findtext(f"{{{OL}}}Port") or 0) for p in root.iter(f"{{{OL}}}Protocol")}
        assert protos[("IMAP", "SSL")] == server.ports["imaps"]
        assert protos[("SMTP", "TLS")] == server.ports["submission"]
    status, _, _ = await asyncio.to_thread(
        get, f"http://127.0.0.1:{server.ports['http']}/autodiscover/autodiscover.xml",
        None, b"x" * 20000)
    assert status == 413


async def test_apple_profile(server: Any) -> None:
    base = f"http://127.0.0.1:{server.ports['http']}/apple"
    status, body, ctype = await asyncio.to_thread(get, f"{base}/wang.wu@cx.example.mobileconfig")
    assert status == 200 and ctype == "application/x-apple-aspen-config"
    (mail,) = plistlib.loads(body)["PayloadContent"]
    assert mail["IncomingMailServerPortNumber"] == server.ports["imaps"]
    assert mail["OutgoingMailServerPortNumber"] == server.ports["submissions"]
    for bad in ("wang.wu@other.example.mobileconfig", "wang.wu@cx.example.txt"):
        assert (await asyncio.to_thread(get, f"{base}/{bad}"))[0] == 404


def test_cli_dns_records(cfg: Any, tmp_path: Path, capsys: Any) -> None:
    from gateway.cli.main import main
    conf = tmp_path / "dns.toml"
    listen = "\n".join(f'{r} = "{getattr(cfg.listen, r)}"' for r in ROLES)
    conf.write_text(f'[server]\ndomain = "cx.example"\nstate_dir = "{tmp_path / "st"}"\n'
                    f'public_hostnames = {json.dumps(NAMES)}\n[listen]\n{listen}\n')
    from mailrelay.dkim import generate_key, record_value
    pem, record = generate_key("cx", "cx.example", 1024)
    (tmp_path / "st" / "dkim").mkdir(parents=True)
    (tmp_path / "st" / "dkim" / "cx.key").write_bytes(pem)
    assert main(["-c", str(conf), "dns", "records", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    srv = {r["name"]: r["value"] for r in recs if r["type"] == "SRV"}
    imaps_port = int(cfg.listen.imaps.rpartition(":")[2])
    assert srv["_imaps._tcp.cx.example."] == f"0 1 {imaps_port} mail.cx.example."
    dkim = next(r["value"] for r in recs if r["name"] == "cx._domainkey.cx.example.")
    assert dkim == record_value(record)  # the record `cxgw dkim keygen` printed
    assert main(["-c", str(conf), "dns", "records"]) == 0
    text = capsys.readouterr().out
    assert "cx.example. 3600 IN MX 10 mail.cx.example." in text
