"""Our seals verify with other S/MIME implementations: OpenSSL (cms, smime) and gpgsm."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from mailrelay.documents.receipt import ReceiptRequest, seal_receipt
from mailrelay.documents.verify import find_signed

from .conftest import DOMAIN, NOW, City

OPENSSL = shutil.which("openssl")
GPGSM = shutil.which("gpgsm")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl CLI not installed")
AT_TIME = str(int(NOW.timestamp()))


def _openssl(tool: str, tmp: Path, city: City, raw: bytes) -> subprocess.CompletedProcess[bytes]:
    assert OPENSSL is not None
    (tmp / "ca.pem").write_bytes(city.ca.certificate.public_bytes(Encoding.PEM))
    (tmp / "msg.eml").write_bytes(raw)
    return subprocess.run(
        [OPENSSL, tool, "-verify", "-CAfile", str(tmp / "ca.pem"), "-in", str(tmp / "msg.eml"),
         "-attime", AT_TIME, "-out", str(tmp / "content.out")],
        capture_output=True, timeout=60, check=False)


@needs_openssl
@pytest.mark.parametrize("tool", ["cms", "smime"])
@pytest.mark.parametrize("variant", ["rsa", "rsa-pss", "ecdsa"])
def test_openssl_verifies_sealed_document(tool: str, variant: str, tmp_path: Path, city: City,
                                          sealed: Callable[..., bytes]) -> None:
    if tool == "smime" and variant == "rsa-pss":
        pytest.skip("openssl smime uses the legacy PKCS#7 code, which has no RSASSA-PSS "
                    "(openssl cms does); the default seal is PKCS#1 v1.5 for this reason")
    if variant == "ecdsa":
        raw = sealed(city.signer(city.stats), from_addr="stats.docs@cx.example")
    else:
        raw = sealed(city.signer(rsa_pss=variant == "rsa-pss"))
    result = _openssl(tool, tmp_path, city, raw)
    assert result.returncode == 0, result.stderr.decode()
    assert b"Verification successful" in result.stderr
    found = find_signed(raw)
    assert found is not None
    # openssl writes the signed entity back out: the bytes are the ones we signed
    assert (tmp_path / "content.out").read_bytes().replace(b"\r\n", b"\n") == \
        found.content.replace(b"\r\n", b"\n")


@needs_openssl
def test_openssl_refuses_tampered_document(tmp_path: Path, city: City,
                                           sealed: Callable[..., bytes]) -> None:
    raw = sealed()
    head_end = raw.index(b"\r\n\r\n") + 4
    tampered = raw[:head_end] + raw[head_end:].replace(b"X-CX-Doc-Urgency: urgent",
                                                       b"X-CX-Doc-Urgency: normal")
    result = _openssl("cms", tmp_path, city, tampered)
    assert result.returncode != 0


@needs_openssl
def test_openssl_verifies_receipt(tmp_path: Path, city: City) -> None:
    req = ReceiptRequest("<m1@cx.example>", "finance.docs@cx.example", "d-1", "通知", "1号",
                         b"\x01" * 32)
    receipt = seal_receipt(req, city.signer(city.stats), receiver="stats.docs@cx.example",
                           receiver_unit="统计局", now=NOW, domain=DOMAIN)
    result = _openssl("cms", tmp_path, city, receipt)
    assert result.returncode == 0, result.stderr.decode()


@pytest.fixture
def gnupg_home(tmp_path: Path, city: City) -> Iterator[tuple[Path, dict[str, str]]]:
    if GPGSM is None:
        pytest.skip("gpgsm not installed")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    ca_pem = tmp_path / "ca.pem"
    ca_pem.write_bytes(city.ca.certificate.public_bytes(Encoding.PEM))
    imported = subprocess.run([GPGSM, "--batch", "--import", str(ca_pem)], env=env,
                              capture_output=True, timeout=60, check=False)
    # No skip here: gpgsm is installed, so a failure to import our CA is a failure.
    assert imported.returncode == 0, imported.stderr.decode("utf-8", "replace")
    # gpg-agent's trustlist.txt marks our root as trusted for S/MIME ("S"), "relax" lets
    # it stand without the qualified-signature policy checks.
    fpr = city.ca.certificate.fingerprint(hashes.SHA1()).hex(":").upper()
    (home / "trustlist.txt").write_text(f"{fpr} S relax\n")
    yield home, env
    gpgconf = shutil.which("gpgconf")
    if gpgconf:  # stop the agent gpgsm started for this home only
        subprocess.run([gpgconf, "--kill", "gpg-agent"], env=env, capture_output=True,
                       timeout=30, check=False)


def _gpgsm_verify(home_env: tuple[Path, dict[str, str]], raw: bytes,
                  tmp: Path) -> subprocess.CompletedProcess[bytes]:
    assert GPGSM is not None
    found = find_signed(raw)
    assert found is not None
    (tmp / "sig.p7s").write_bytes(found.signature_der)
    (tmp / "content.bin").write_bytes(found.content)
    return subprocess.run(
        [GPGSM, "--batch", "--disable-crl-checks", "--disable-policy-checks",
         "--faked-system-time", f"{AT_TIME}!", "--status-fd", "1",
         "--verify", str(tmp / "sig.p7s"), str(tmp / "content.bin")],
        env=home_env[1], capture_output=True, timeout=60, check=False)


@pytest.mark.parametrize("variant", ["rsa", "ecdsa", "receipt"])
def test_gpgsm_verifies_seals_and_receipts(variant: str,
                                           gnupg_home: tuple[Path, dict[str, str]],
                                           tmp_path: Path, city: City,
                                           sealed: Callable[..., bytes]) -> None:
    """Every seal and receipt verifies with gpgsm (a failure fails: no skip on ERRSIG)."""
    if variant == "ecdsa":
        raw = sealed(city.signer(city.stats), from_addr="stats.docs@cx.example")
    elif variant == "receipt":
        req = ReceiptRequest("<m1@cx.example>", "finance.docs@cx.example", "d-1", "通知",
                             "1号", b"\x01" * 32)
        raw = seal_receipt(req, city.signer(city.stats), receiver="stats.docs@cx.example",
                           receiver_unit="统计局", now=NOW, domain=DOMAIN)
    else:
        raw = sealed()
    result = _gpgsm_verify(gnupg_home, raw, tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr).decode("utf-8", "replace")
    assert b"GOODSIG" in result.stdout and b"TRUST_FULLY" in result.stdout


def test_seal_carries_ess_signing_certificate_v2(city: City,
                                                 sealed: Callable[..., bytes]) -> None:
    """RFC 5035: signingCertificateV2 names the signer certificate by its SHA-256 (CAdES-BES)."""
    import hashlib

    from asn1crypto import cms as asn1_cms
    from asn1crypto import tsp  # noqa: F401  (registers the attribute)
    found = find_signed(sealed())
    assert found is not None
    si = asn1_cms.ContentInfo.load(found.signature_der)["content"]["signer_infos"][0]
    attrs = {a["type"].native: a["values"][0] for a in si["signed_attrs"]}
    ess = attrs["signing_certificate_v2"]
    [cert_id] = ess["certs"]
    want = hashlib.sha256(city.finance.certificate.public_bytes(Encoding.DER)).digest()
    assert cert_id["cert_hash"].native == want
    assert cert_id["hash_algorithm"]["algorithm"].native == "sha256"
    assert cert_id["issuer_serial"]["serial_number"].native == \
        city.finance.certificate.serial_number


def test_gpgsm_refuses_tampered_document(gnupg_home: tuple[Path, dict[str, str]],
                                         tmp_path: Path, sealed: Callable[..., bytes]) -> None:
    raw = sealed()
    found = find_signed(raw)
    assert found is not None
    tampered = raw.replace(found.content, found.content.replace(b"urgent", b"normal"))
    result = _gpgsm_verify(gnupg_home, tampered, tmp_path)
    assert result.returncode != 0
    assert b"GOODSIG" not in result.stdout
