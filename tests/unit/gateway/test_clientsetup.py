"""Client self-configuration documents and DNS records (gateway.clientsetup, dnsrecords):
each document is parsed back the way the client reads it, and must name the configured
ports with the right socket type. No published XSD is available offline for Thunderbird's
config-v1.1 (Mozilla publishes none) or Outlook's POX schema, so the elements those
clients read are checked one by one."""

from __future__ import annotations

import plistlib
from xml.etree import ElementTree as ET

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cxkernel.config import ConfigError, from_dict
from gateway import clientsetup, dnsrecords
from gateway.clientsetup import AUTODISCOVER_OUTLOOK as OL
from gateway.clientsetup import AUTODISCOVER_REQ, AUTODISCOVER_RESP, ClientSettings

PORTS = {"imap": 1143, "imaps": 1993, "pop3": 1110, "pop3s": 1995, "submission": 1587,
         "submissions": 1465, "xmpp": 15222, "xmpps": 15223, "http": 18080, "https": 18443}


def settings(**server: object) -> ClientSettings:
    listen = {k: f"0.0.0.0:{v}" for k, v in PORTS.items()}
    return ClientSettings.from_config(from_dict(
        {"server": {"domain": "cx.example", **server}, "listen": listen}))


def test_public_hostnames_default_and_validation() -> None:
    assert settings().hostnames == ("mail.cx.example",)
    assert settings(hostname="mx1.cx.example").host == "mx1.cx.example"
    s = settings(public_hostnames=["Mail.CX.example", "imap.cx.example"])
    assert s.hostnames == ("mail.cx.example", "imap.cx.example")
    with pytest.raises(ConfigError, match="public_hostnames"):
        settings(public_hostnames=["bad name"])
    for bad in (["abuse"], ["spam=mailto:x@cx.example"], ["admin=nourl"]):
        with pytest.raises(ConfigError, match="contact_addresses"):
            from_dict({"xmpp": {"contact_addresses": bad}})
    assert from_dict({"xmpp": {"contact_addresses": ["security=mailto:sec@cx.example"]}})


def test_thunderbird_autoconfig_names_every_listener() -> None:
    root = ET.fromstring(clientsetup.thunderbird(settings(), "zhang.san@cx.example"))
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    prov = root.find("emailProvider")
    assert prov is not None and prov.get("id") == "cx.example"
    assert [d.text for d in prov.findall("domain")] == ["cx.example"]
    got = {}
    for el in prov.findall("incomingServer") + prov.findall("outgoingServer"):
        assert el.findtext("hostname") == "mail.cx.example"
        assert el.findtext("username") == "zhang.san@cx.example"
        assert el.findtext("authentication") == "password-cleartext"
        got[(el.get("type"), el.findtext("socketType"))] = int(el.findtext("port") or 0)
    assert got == {("imap", "SSL"): 1993, ("imap", "STARTTLS"): 1143,
                   ("pop3", "SSL"): 1995, ("pop3", "STARTTLS"): 1110,
                   ("smtp", "SSL"): 1465, ("smtp", "STARTTLS"): 1587}
    # The first incoming server is what Thunderbird proposes: IMAP over TLS.
    first = prov.find("incomingServer")
    assert first is not None and first.get("type") == "imap"
    assert first.findtext("socketType") == "SSL"


def test_thunderbird_placeholder_without_address_and_disabled_listener() -> None:
    cfg = from_dict({"server": {"domain": "cx.example"},
                     "listen": {"pop3": "", "pop3s": "", "imap": "127.0.0.1:143"}})
    root = ET.fromstring(clientsetup.thunderbird(ClientSettings.from_config(cfg)))
    assert not root.findall("emailProvider/incomingServer[@type='pop3']")
    assert {e.findtext("username") for e in root.iter("incomingServer")} == {"%EMAILADDRESS%"}
    assert root.findtext("emailProvider/incomingServer[socketType='STARTTLS']/port") == "143"


def test_local_address_refuses_other_domains_and_markup() -> None:
    s = settings()
    assert clientsetup.local_address(s, "Zhang.San@CX.example") == "zhang.san@cx.example"
    for bad in ("a@other.example", "nodomain", "@cx.example", "a<b>@cx.example",
                "x" * 300 + "@cx.example", None, ""):
        assert clientsetup.local_address(s, bad) is None


def autodiscover_request(address: str) -> bytes:
    return (f"<?xml version='1.0' encoding='utf-8'?><Autodiscover xmlns='{AUTODISCOVER_REQ}'>"
            f"<Request><EMailAddress>{address}</EMailAddress><AcceptableResponseSchema>"
            f"{OL}</AcceptableResponseSchema></Request></Autodiscover>").encode()


def test_outlook_autodiscover_pox() -> None:
    s = settings()
    addr = clientsetup.autodiscover_request_address(autodiscover_request("li.si@cx.example"))
    assert addr == "li.si@cx.example"
    root = ET.fromstring(clientsetup.autodiscover(s, clientsetup.local_address(s, addr)))
    assert root.tag == f"{{{AUTODISCOVER_RESP}}}Autodiscover"
    acct = root.find(f"{{{OL}}}Response/{{{OL}}}Account")
    assert acct is not None
    assert acct.findtext(f"{{{OL}}}AccountType") == "email"
    assert acct.findtext(f"{{{OL}}}Action") == "settings"
    protos = acct.findall(f"{{{OL}}}Protocol")
    seen = [(p.findtext(f"{{{OL}}}Type"), int(p.findtext(f"{{{OL}}}Port") or 0),
             p.findtext(f"{{{OL}}}Encryption")) for p in protos]
    assert seen == [("IMAP", 1993, "SSL"), ("IMAP", 1143, "TLS"), ("POP3", 1995, "SSL"),
                    ("POP3", 1110, "TLS"), ("SMTP", 1465, "SSL"), ("SMTP", 1587, "TLS")]
    for p in protos:
        assert p.findtext(f"{{{OL}}}Server") == "mail.cx.example"
        assert p.findtext(f"{{{OL}}}LoginName") == "li.si@cx.example"
        assert p.findtext(f"{{{OL}}}AuthRequired") == "on"


def test_outlook_autodiscover_errors() -> None:
    s = settings()
    assert clientsetup.autodiscover_request_address(b"<not xml") is None
    assert clientsetup.autodiscover_request_address(
        b"<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><x>&e;</x>") is None
    root = ET.fromstring(clientsetup.autodiscover(s, None))
    err = root.find(f"{{{AUTODISCOVER_RESP}}}Response/{{{AUTODISCOVER_RESP}}}Error")
    assert err is not None and err.findtext(f"{{{AUTODISCOVER_RESP}}}ErrorCode") == "600"


def test_apple_mobileconfig() -> None:
    doc = plistlib.loads(clientsetup.mobileconfig(settings(), "wang.wu@cx.example"))
    assert doc["PayloadType"] == "Configuration" and doc["PayloadVersion"] == 1
    (mail,) = doc["PayloadContent"]
    assert mail["PayloadType"] == "com.apple.mail.managed"
    assert mail["EmailAccountType"] == "EmailTypeIMAP"
    assert mail["EmailAddress"] == mail["IncomingMailServerUsername"] == "wang.wu@cx.example"
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"],
            mail["IncomingMailServerUseSSL"]) == ("mail.cx.example", 1993, True)
    assert (mail["OutgoingMailServerPortNumber"], mail["OutgoingMailServerUseSSL"]) == (1465, True)
    again = plistlib.loads(clientsetup.mobileconfig(settings(), "wang.wu@cx.example"))
    assert again["PayloadUUID"] == doc["PayloadUUID"]  # reinstalling replaces, not adds
    other = plistlib.loads(clientsetup.mobileconfig(settings(), "li.si@cx.example"))
    assert other["PayloadUUID"] != doc["PayloadUUID"]


def test_dns_records() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = key.private_bytes(serialization.Encoding.PEM,
                            serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    cfg = from_dict({"server": {"domain": "cx.example"},
                     "listen": {**{k: f"0.0.0.0:{v}" for k, v in PORTS.items()}, "pop3": ""}})
    recs = dnsrecords.records(ClientSettings.from_config(cfg), dkim_selector="cx",
                              dkim_key_pem=pem)
    by = {(r.name, r.type): r.value for r in recs}
    assert by[("cx.example.", "MX")] == "10 mail.cx.example."
    assert by[("cx.example.", "TXT")].startswith("v=spf1 mx")
    dkim = by[("cx._domainkey.cx.example.", "TXT")]
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    import base64
    assert dkim == f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode()}"
    assert by[("_dmarc.cx.example.", "TXT")].startswith("v=DMARC1; p=quarantine")
    assert by[("_mta-sts.cx.example.", "TXT")].startswith("v=STSv1; id=")
    for label, port in (("_submission", 1587), ("_imap", 1143), ("_imaps", 1993),
                        ("_pop3s", 1995), ("_xmpp-client", 15222), ("_xmpps-client", 15223),
                        ("_autodiscover", 18443), ("_submissions", 1465)):
        assert by[(f"{label}._tcp.cx.example.", "SRV")] == f"0 1 {port} mail.cx.example."
    assert by[("_pop3._tcp.cx.example.", "SRV")] == "0 0 0 ."  # disabled: RFC 6186 §4
    for name in ("autoconfig", "autodiscover", "mta-sts"):
        assert by[(f"{name}.cx.example.", "CNAME")] == "mail.cx.example."
    # TXT longer than 255 octets is split into character-strings.
    key2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem2 = key2.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption())
    rec = next(r for r in dnsrecords.records(ClientSettings.from_config(cfg), dkim_selector="cx",
                                             dkim_key_pem=pem2) if "_domainkey" in r.name)
    from mailrelay.dkim import record_value
    line = rec.zone_line()
    assert line.count('"') >= 4 and record_value(line) == rec.value
    # No key: no DKIM record, DMARC only asks for reports.
    nokey = dnsrecords.records(ClientSettings.from_config(cfg), dkim_selector="cx",
                               dkim_key_pem=None)
    assert not [r for r in nokey if "_domainkey" in r.name]
    assert "p=none" in next(r.value for r in nokey if r.name.startswith("_dmarc"))


def test_mta_sts_policy() -> None:
    text = dnsrecords.mta_sts_policy(settings(public_hostnames=["mx1.cx.example",
                                                                "mx2.cx.example"]))
    lines = text.split("\r\n")
    assert lines[0] == "version: STSv1" and "mode: testing" in lines
    assert "mx: mx1.cx.example" in lines and "mx: mx2.cx.example" in lines
