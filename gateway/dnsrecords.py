"""The DNS records an operator publishes for this service, pure (no I/O): MX, SPF, DKIM
(from the active key), DMARC, MTA-STS and TLS-RPT, the SRV records of RFC 6186 / RFC 8314 /
RFC 6120 / XEP-0368 and autodiscover, and the CNAMEs clients' autoconfig looks up.
`cxgw dns records [--json]` prints them; the MTA-STS policy they announce is served at
``/.well-known/mta-sts.txt``.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import asdict, dataclass

from cryptography.hazmat.primitives import serialization

from gateway.clientsetup import ClientSettings

TTL = 3600
MTA_STS_MAX_AGE = 604800  # one week (RFC 8461 §3.2 allows up to 31557600)

# (service label, listener) in the order printed. RFC 6186 §3.1 (submission, imap, pop3),
# RFC 8314 §5.1 (submissions, imaps, pop3s), RFC 6120 §3.2.1, XEP-0368 §3.
SRV_SERVICES = (("_submission._tcp", "submission"), ("_submissions._tcp", "submissions"),
                ("_imap._tcp", "imap"), ("_imaps._tcp", "imaps"),
                ("_pop3._tcp", "pop3"), ("_pop3s._tcp", "pop3s"),
                ("_xmpp-client._tcp", "xmpp"), ("_xmpps-client._tcp", "xmpps"),
                ("_autodiscover._tcp", "https"))


@dataclass(frozen=True)
class Record:
    name: str      # fully qualified, with the trailing dot
    type: str
    value: str     # as it appears in a zone file (TXT: the unquoted text)
    purpose: str
    ttl: int = TTL

    def zone_line(self) -> str:
        value = self.value
        if self.type == "TXT":  # RFC 1035 §3.3.14: character-strings of at most 255 octets
            value = " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))
        return f"{self.name} {self.ttl} IN {self.type} {value}"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def dkim_value(private_key_pem: bytes) -> str:
    """The DKIM TXT value of a private key: ``v=DKIM1; k=rsa; p=<base64 SPKI>``
    (RFC 6376 §3.6.1)."""
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode('ascii')}"


def mta_sts_policy(settings: ClientSettings, enforce: bool = False) -> str:
    """The MTA-STS policy file (RFC 8461 §3.2): our MX host names, `testing` unless
    enforcing is asked for (a self-signed certificate must never be enforced)."""
    lines = ["version: STSv1", f"mode: {'enforce' if enforce else 'testing'}"]
    lines += [f"mx: {name}" for name in settings.hostnames]
    lines.append(f"max_age: {MTA_STS_MAX_AGE}")
    return "\r\n".join(lines) + "\r\n"  # RFC 8461 §3.2: CRLF-separated key/value pairs


def records(settings: ClientSettings, *, dkim_selector: str, dkim_key_pem: bytes | None,
            smarthost: str = "", enforce_mta_sts: bool = False) -> list[Record]:
    """Every record to publish for `settings`' domain."""
    d = settings.domain + "."
    host = settings.host + "."
    postmaster = f"postmaster@{settings.domain}"
    out = [Record(d, "MX", f"10 {host}", "mail for the domain comes here (RFC 5321 §5.1)")]
    spf = "v=spf1 mx"
    if smarthost:
        spf += f" a:{smarthost.rpartition(':')[0] or smarthost}"
    out.append(Record(d, "TXT", spf + " -all", "SPF: who may send as the domain (RFC 7208)"))
    if dkim_key_pem is not None:
        out.append(Record(f"{dkim_selector}._domainkey.{d}", "TXT", dkim_value(dkim_key_pem),
                          "DKIM public key of the active signing key (RFC 6376 §3.6.2)"))
    # Without a DKIM key only SPF can align: ask for reports, do not quarantine yet.
    policy = "quarantine" if dkim_key_pem is not None else "none"
    out.append(Record(f"_dmarc.{d}", "TXT",
                      f"v=DMARC1; p={policy}; adkim=r; aspf=r; rua=mailto:{postmaster}",
                      "DMARC policy and aggregate reports (RFC 7489 §6.3)"))
    policy_text = mta_sts_policy(settings, enforce_mta_sts)
    sts_id = hashlib.sha256(policy_text.encode()).hexdigest()[:20]
    out.append(Record(f"_mta-sts.{d}", "TXT", f"v=STSv1; id={sts_id}",
                      "MTA-STS: a policy exists; id changes with it (RFC 8461 §3.1)"))
    out.append(Record(f"mta-sts.{d}", "CNAME", host,
                      "MTA-STS policy host: https://mta-sts.<domain>/.well-known/mta-sts.txt "
                      "(needs the https listener on port 443)"))
    out.append(Record(f"_smtp._tls.{d}", "TXT", f"v=TLSRPTv1; rua=mailto:{postmaster}",
                      "TLS reporting (RFC 8460 §3)"))
    for label, listener in SRV_SERVICES:
        svc = settings.get(listener)
        if svc is None:
            # RFC 6186 §4: target "." says the service is not offered here.
            out.append(Record(f"{label}.{d}", "SRV", "0 0 0 .",
                              f"{listener} is disabled: not offered"))
        else:
            out.append(Record(f"{label}.{d}", "SRV", f"0 1 {svc.port} {host}",
                              f"{listener} ({svc.tls}) (RFC 2782)"))
    for name, why in (("autoconfig", "Thunderbird autoconfig"),
                      ("autodiscover", "Outlook autodiscover")):
        out.append(Record(f"{name}.{d}", "CNAME", host, why))
    return out
