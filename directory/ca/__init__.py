"""A small certificate authority for the city: root CA, unit seals, personal S/MIME
certificates, PKCS#12 export, CRLs and OCSP responses. Pure logic: no database, no files.
"""

from .crl import Revocation, RevocationReason, build_crl
from .issue import (
    CertificateAuthority,
    IssuedCertificate,
    create_root_ca,
    issue_personal_certificate,
    issue_unit_seal,
    unit_docs_address,
)
from .keys import KeyAlgorithm, PrivateKey, dump_private_key, generate_key, load_private_key
from .ocsp import (
    GOOD,
    UNKNOWN,
    CertStatus,
    Status,
    build_ocsp_request,
    build_ocsp_response,
    issuer_hashes,
)
from .pkcs12 import Pkcs12Bundle, export_pkcs12, load_pkcs12

__all__ = [
    "GOOD",
    "UNKNOWN",
    "CertStatus",
    "CertificateAuthority",
    "IssuedCertificate",
    "KeyAlgorithm",
    "Pkcs12Bundle",
    "PrivateKey",
    "Revocation",
    "RevocationReason",
    "Status",
    "build_crl",
    "build_ocsp_request",
    "build_ocsp_response",
    "create_root_ca",
    "dump_private_key",
    "export_pkcs12",
    "generate_key",
    "issue_personal_certificate",
    "issue_unit_seal",
    "issuer_hashes",
    "load_pkcs12",
    "load_private_key",
    "unit_docs_address",
]
