"""Client self-configuration documents, pure (no I/O): Thunderbird autoconfig, Outlook
autodiscover (POX), and the Apple configuration profile, all generated from ``[listen]``
and ``server.public_hostnames``.

What a client is told: the preferred public host name (the first of
``server.public_hostnames``) and the *port* of each enabled listener, with its socket type
(``imap``/``submission``/``pop3`` use STARTTLS, ``imaps``/``submissions``/``pop3s``
implicit TLS). Behind a port forward, set the listeners to the ports clients really use.
The login name is the address as given: these documents are public, so they never reveal
whether an address exists (no directory lookup).
"""

from __future__ import annotations

import plistlib
import uuid
from dataclasses import dataclass
from xml.etree import ElementTree as ET

from cxkernel.config import Config

# The mail services clients configure, in the order offered (preferred first per kind).
# (listener, kind, tls) with tls "implicit" or "starttls".
MAIL_SERVICES = (("imaps", "imap", "implicit"), ("imap", "imap", "starttls"),
                 ("pop3s", "pop3", "implicit"), ("pop3", "pop3", "starttls"),
                 ("submissions", "smtp", "implicit"), ("submission", "smtp", "starttls"))

AUTODISCOVER_REQ = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
AUTODISCOVER_RESP = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
AUTODISCOVER_OUTLOOK = ("http://schemas.microsoft.com/exchange/autodiscover/outlook/"
                        "responseschema/2006a")
MAX_ADDRESS = 254  # RFC 5321 §4.5.3.1.3 path limit, less the brackets


@dataclass(frozen=True)
class Service:
    listener: str   # config key in [listen]
    kind: str       # imap, pop3, smtp, xmpp, http
    tls: str        # implicit, starttls, none
    port: int


@dataclass(frozen=True)
class ClientSettings:
    """What clients are told, derived from the config once."""

    domain: str
    hostnames: tuple[str, ...]
    services: tuple[Service, ...]

    @property
    def host(self) -> str:
        return self.hostnames[0]

    def of(self, kind: str) -> list[Service]:
        return [s for s in self.services if s.kind == kind]

    def get(self, listener: str) -> Service | None:
        return next((s for s in self.services if s.listener == listener), None)

    @classmethod
    def from_config(cls, cfg: Config) -> ClientSettings:
        out: list[Service] = []
        for listener, kind, tls in MAIL_SERVICES + (
                ("xmpp", "xmpp", "starttls"), ("xmpps", "xmpp", "implicit"),
                ("https", "http", "implicit"), ("http", "http", "none")):
            addr = cfg.listen_addr(listener)
            if addr is not None and addr[1]:
                out.append(Service(listener, kind, tls, addr[1]))
        return cls(cfg.server.domain.lower(),
                   tuple(n.rstrip(".").lower() for n in cfg.server.public_names), tuple(out))


def local_address(settings: ClientSettings, address: str | None) -> str | None:
    """`address` lower-cased if it is a plausible address in our domain, else None."""
    if not address or len(address) > MAX_ADDRESS:
        return None
    address = address.strip().lower()
    local, at, dom = address.rpartition("@")
    if not at or not local or dom != settings.domain:
        return None
    if any(c.isspace() or c in "<>\"'&" or ord(c) < 32 for c in address):
        return None
    return address


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrib)
    if text is not None:
        el.text = text
    return el


def _doc(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def thunderbird(settings: ClientSettings, address: str | None = None) -> bytes:
    """Thunderbird's autoconfig document (config-v1.1.xml). With `address` (the
    ``emailaddress`` query parameter) the login name is that address; without, the
    ``%EMAILADDRESS%`` placeholder Thunderbird fills in itself."""
    root = ET.Element("clientConfig", version="1.1")
    prov = _sub(root, "emailProvider", id=settings.domain)
    _sub(prov, "domain", settings.domain)
    _sub(prov, "displayName", f"{settings.domain} mail")
    _sub(prov, "displayShortName", settings.domain)
    user = address or "%EMAILADDRESS%"
    for svc in settings.services:
        if svc.kind not in ("imap", "pop3", "smtp"):
            continue
        el = _sub(prov, "outgoingServer" if svc.kind == "smtp" else "incomingServer",
                  type=svc.kind)
        _sub(el, "hostname", settings.host)
        _sub(el, "port", str(svc.port))
        # Thunderbird's socketType: "SSL" is implicit TLS, "STARTTLS" the upgrade.
        _sub(el, "socketType", "SSL" if svc.tls == "implicit" else "STARTTLS")
        _sub(el, "authentication", "password-cleartext")  # SASL PLAIN inside TLS
        _sub(el, "username", user)
    return _doc(root)


def autodiscover_request_address(body: bytes) -> str | None:
    """The ``EMailAddress`` of an Outlook POX autodiscover request, or None."""
    try:
        # expat never fetches external entities and refuses entity expansion bombs
        # (expat >= 2.4.1); the body is bounded by the route's max_body.
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    el = root.find(f"{{{AUTODISCOVER_REQ}}}Request/{{{AUTODISCOVER_REQ}}}EMailAddress")
    if el is None:  # some clients send the elements without the namespace
        el = root.find("Request/EMailAddress")
    return (el.text or "").strip() if el is not None else None


def autodiscover(settings: ClientSettings, address: str | None) -> bytes:
    """Outlook's POX autodiscover response: one ``Protocol`` per mail service, or the
    error 600 "Invalid Request" when the request named no address of ours."""
    ET.register_namespace("", AUTODISCOVER_RESP)
    root = ET.Element(f"{{{AUTODISCOVER_RESP}}}Autodiscover")
    if address is None:
        resp = _sub(root, f"{{{AUTODISCOVER_RESP}}}Response")
        err = _sub(resp, f"{{{AUTODISCOVER_RESP}}}Error", Time="00:00:00", Id="0")
        _sub(err, f"{{{AUTODISCOVER_RESP}}}ErrorCode", "600")
        _sub(err, f"{{{AUTODISCOVER_RESP}}}Message", "Invalid Request")
        _sub(err, f"{{{AUTODISCOVER_RESP}}}DebugData", "")
        return _doc(root)
    ns = AUTODISCOVER_OUTLOOK
    resp = _sub(root, f"{{{ns}}}Response")
    acct = _sub(resp, f"{{{ns}}}Account")
    _sub(acct, f"{{{ns}}}AccountType", "email")
    _sub(acct, f"{{{ns}}}Action", "settings")
    # Outlook takes the first Protocol of each Type: the implicit-TLS listeners come first.
    for svc in settings.services:
        if svc.kind not in ("imap", "pop3", "smtp"):
            continue
        p = _sub(acct, f"{{{ns}}}Protocol")
        _sub(p, f"{{{ns}}}Type", {"imap": "IMAP", "pop3": "POP3", "smtp": "SMTP"}[svc.kind])
        _sub(p, f"{{{ns}}}Server", settings.host)
        _sub(p, f"{{{ns}}}Port", str(svc.port))
        _sub(p, f"{{{ns}}}LoginName", address)
        _sub(p, f"{{{ns}}}DomainRequired", "off")
        _sub(p, f"{{{ns}}}SPA", "off")
        # Encryption (overrides SSL): "SSL" is implicit TLS, "TLS" is STARTTLS.
        _sub(p, f"{{{ns}}}SSL", "on")
        _sub(p, f"{{{ns}}}Encryption", "SSL" if svc.tls == "implicit" else "TLS")
        _sub(p, f"{{{ns}}}AuthRequired", "on")
        if svc.kind == "smtp":
            _sub(p, f"{{{ns}}}UsePOPAuth", "off")
            _sub(p, f"{{{ns}}}SMTPLast", "off")
    return _doc(root)


def _uuid(*parts: str) -> str:
    # Stable per address: installing the profile again replaces it instead of adding one.
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, "/".join(parts))).upper()


def mobileconfig(settings: ClientSettings, address: str) -> bytes:
    """An unsigned Apple configuration profile with one mail account (IMAP and SMTP).

    iOS has no XMPP account payload (``com.apple.jabber.account`` was macOS-only, for
    Messages, which dropped Jabber in macOS 11), so none is included. iOS mail payloads
    know only "use SSL" per server: the implicit-TLS listeners are preferred."""
    imap = _pick(settings, "imap")
    smtp = _pick(settings, "smtp")
    ident = ".".join(reversed(settings.domain.split(".")))
    payloads = []
    if imap is not None and smtp is not None:
        payloads.append({
            "PayloadType": "com.apple.mail.managed",
            "PayloadVersion": 1,
            "PayloadIdentifier": f"{ident}.mail.{_uuid(address, 'mail')}",
            "PayloadUUID": _uuid(address, "mail"),
            "PayloadDisplayName": f"{settings.domain} mail",
            "EmailAccountDescription": address,
            "EmailAccountType": "EmailTypeIMAP",
            "EmailAddress": address,
            "IncomingMailServerHostName": settings.host,
            "IncomingMailServerPortNumber": imap.port,
            "IncomingMailServerUseSSL": imap.tls == "implicit",
            "IncomingMailServerAuthentication": "EmailAuthPassword",
            "IncomingMailServerUsername": address,
            "OutgoingMailServerHostName": settings.host,
            "OutgoingMailServerPortNumber": smtp.port,
            "OutgoingMailServerUseSSL": smtp.tls == "implicit",
            "OutgoingMailServerAuthentication": "EmailAuthPassword",
            "OutgoingMailServerUsername": address,
            "OutgoingPasswordSameAsIncomingPassword": True,
        })
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{ident}.profile.{_uuid(address)}",
        "PayloadUUID": _uuid(address),
        "PayloadDisplayName": f"{settings.domain}: {address}",
        "PayloadDescription": f"Mail settings for {address}",
        "PayloadOrganization": settings.domain,
        "PayloadRemovalDisallowed": False,
        "PayloadContent": payloads,
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML)


def _pick(settings: ClientSettings, kind: str) -> Service | None:
    found = settings.of(kind)
    return next((s for s in found if s.tls == "implicit"), found[0] if found else None)
