"""Issue certificates: the city root CA, unit seal certificates, personal S/MIME certificates.

Everything here is pure: the caller passes ``now``, keys and URLs, and persists the
results (directory repo). Profiles follow RFC 5280 and RFC 8550 (S/MIME certificates).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .keys import KeyAlgorithm, PrivateKey, PublicKey, generate_key, random_serial

# Backdate notBefore a little so a slightly slow client clock does not reject a fresh cert.
CLOCK_SKEW = timedelta(minutes=10)


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA certificate together with its private key (held in memory only)."""

    certificate: x509.Certificate
    key: PrivateKey

    @property
    def name(self) -> x509.Name:
        return self.certificate.subject


@dataclass(frozen=True)
class IssuedCertificate:
    """A freshly issued end-entity certificate and the key generated for it."""

    certificate: x509.Certificate
    key: PrivateKey

    @property
    def serial(self) -> int:
        return self.certificate.serial_number


def _hash_for(key: PrivateKey) -> hashes.SHA256:
    return hashes.SHA256()


def _name(common_name: str, organization: str, unit: str | None = None,
          country: str | None = "CN") -> x509.Name:
    # cryptography encodes these attributes as UTF8String (RFC 5280 §4.1.2.6 SHOULD),
    # so Chinese unit names survive; countryName stays PrintableString.
    attrs: list[x509.NameAttribute] = []
    if country:
        attrs.append(x509.NameAttribute(NameOID.COUNTRY_NAME, country))
    attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    if unit:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def create_root_ca(
    *,
    now: datetime,
    common_name: str = "CX City Root CA",
    organization: str = "CX City Government",
    country: str | None = "CN",
    algorithm: KeyAlgorithm = KeyAlgorithm.RSA2048,
    validity: timedelta = timedelta(days=3650),
    key: PrivateKey | None = None,
) -> CertificateAuthority:
    """A self-signed root CA (RFC 5280 §4.2.1.9: basicConstraints critical, cA=TRUE)."""
    key = key or generate_key(algorithm)
    name = _name(common_name, organization, None, country)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(random_serial())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        # RFC 5280 §4.2.1.3: keyCertSign + cRLSign for a CA; we also sign OCSP directly.
        .add_extension(_key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True),
                       critical=True)
        .add_extension(ski, critical=False)
        # RFC 5280 §4.2.1.1: AKI MAY be omitted in a self-signed cert; we keep it for chains.
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
    )
    return CertificateAuthority(builder.sign(key, _hash_for(key)), key)


def _key_usage(*, digital_signature: bool = False, content_commitment: bool = False,
               key_encipherment: bool = False, key_agreement: bool = False,
               key_cert_sign: bool = False, crl_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=content_commitment,  # a.k.a. nonRepudiation
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=key_agreement,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _end_entity(
    ca: CertificateAuthority,
    *,
    subject: x509.Name,
    public_key: PublicKey,
    email: str,
    key_usage: x509.KeyUsage,
    now: datetime,
    validity: timedelta,
    crl_url: str | None,
    ocsp_url: str | None,
    eku: list[x509.ObjectIdentifier] | None,
) -> x509.Certificate:
    not_after = min(now + validity, ca.certificate.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)
        .serial_number(random_serial())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # RFC 8550 §4.4.2: S/MIME signing certs assert digitalSignature and/or nonRepudiation.
        .add_extension(key_usage, critical=True)
        # RFC 8550 §3: the address lives in subjectAltName rfc822Name.
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_aki(ca), critical=False)
    )
    if eku:
        # RFC 8550 §4.4.4: emailProtection for S/MIME; not critical.
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if crl_url:
        dp = x509.DistributionPoint(full_name=[x509.UniformResourceIdentifier(crl_url)],
                                    relative_name=None, reasons=None, crl_issuer=None)
        builder = builder.add_extension(x509.CRLDistributionPoints([dp]), critical=False)
    if ocsp_url:
        aia = x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.OCSP,
                                     x509.UniformResourceIdentifier(ocsp_url))
        builder = builder.add_extension(x509.AuthorityInformationAccess([aia]), critical=False)
    return builder.sign(ca.key, _hash_for(ca.key))


def _aki(ca: CertificateAuthority) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())


def _email_protection(enabled: bool) -> list[x509.ObjectIdentifier] | None:
    return [ExtendedKeyUsageOID.EMAIL_PROTECTION] if enabled else None


def issue_unit_seal(
    ca: CertificateAuthority,
    *,
    unit_code: str,
    unit_name: str,
    domain: str,
    now: datetime,
    organization: str = "CX City Government",
    crl_url: str | None = None,
    ocsp_url: str | None = None,
    validity: timedelta = timedelta(days=730),
    algorithm: KeyAlgorithm = KeyAlgorithm.RSA2048,
    key: PrivateKey | None = None,
    email_protection: bool = True,
) -> IssuedCertificate:
    """The electronic seal of a unit: CN=unit name, OU=unit code, SAN <code>.docs@domain.

    ``email_protection=False`` exists for tests of the verifier's EKU check only.
    """
    key = key or generate_key(algorithm)
    cert = _end_entity(
        ca,
        subject=_name(unit_name, organization, unit_code),
        public_key=key.public_key(),
        email=unit_docs_address(unit_code, domain),
        key_usage=_key_usage(digital_signature=True, content_commitment=True),
        now=now, validity=validity, crl_url=crl_url, ocsp_url=ocsp_url,
        eku=_email_protection(email_protection),
    )
    return IssuedCertificate(cert, key)


def issue_personal_certificate(
    ca: CertificateAuthority,
    *,
    email: str,
    full_name: str,
    now: datetime,
    organization: str = "CX City Government",
    unit_code: str | None = None,
    crl_url: str | None = None,
    ocsp_url: str | None = None,
    validity: timedelta = timedelta(days=730),
    algorithm: KeyAlgorithm = KeyAlgorithm.RSA2048,
    key: PrivateKey | None = None,
) -> IssuedCertificate:
    """A personal S/MIME certificate (signing, and encryption for RSA keys)."""
    key = key or generate_key(algorithm)
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    usage = _key_usage(
        digital_signature=True,
        content_commitment=True,
        key_encipherment=is_rsa,  # RFC 8550 §4.4.2: RSA key transport
        key_agreement=isinstance(key, ec.EllipticCurvePrivateKey),  # ECDH (RFC 5753)
    )
    cert = _end_entity(
        ca,
        subject=_name(full_name, organization, unit_code),
        public_key=key.public_key(),
        email=email,
        key_usage=usage,
        now=now, validity=validity, crl_url=crl_url, ocsp_url=ocsp_url,
        eku=_email_protection(True),
    )
    return IssuedCertificate(cert, key)


def unit_docs_address(unit_code: str, domain: str) -> str:
    """The document inbox of a unit: ``<unit-code>.docs@<domain>``."""
    return f"{unit_code.lower()}.docs@{domain.lower()}"
