"""Sealing in worker processes (issue #17 item 4): the same seal as in-process, the key
never in the clear on the pipe, a tampered wrapped key refused; and the signed
attributes checked as received (in DER order, or refused)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization

from mailrelay.documents import seal as seal_mod
from mailrelay.documents.docmime import Attachment
from mailrelay.documents.seal import Signer, assemble_signed, sign_detached
from mailrelay.documents.sealpool import KeyRef, SealPool, _init_worker, _seal_job
from mailrelay.documents.verify import find_signed, verify_message

from .conftest import DOMAIN, NOW, City, make_meta, prepare

ATT = [Attachment("a.pdf", b"%PDF-1.7 " + bytes(range(256)) * 40, "application/pdf")]


@pytest.fixture(scope="module")
def pool() -> Iterator[SealPool]:
    p = SealPool(2)
    yield p
    p.close()


def _seal(pool: SealPool, signer: Signer, doc_id: str, unit: str) -> bytes:
    async def go() -> bytes:
        done = await pool.seal(make_meta(doc_id=doc_id), "请查收。", ATT, signer,
                               from_addr=f"{unit}.docs@{DOMAIN}",
                               to_addrs=[f"stats.docs@{DOMAIN}"], now=NOW, domain=DOMAIN)
        assert done.message_id.endswith(f"@{DOMAIN}>")
        return done.raw
    return asyncio.run(go())


def test_pool_seals_what_verifies(city: City, pool: SealPool) -> None:
    for unit, signer in (("finance", city.signer()),  # RSA and ECDSA seals
                         ("stats", city.signer(city.stats))):
        raw = _seal(pool, signer, "d-pool-1", unit)
        v = verify_message(raw, city.anchors, now=NOW)
        assert v.trusted, v
        assert v.signer_serial == signer.certificate.serial_number
        # RFC 5035: the ESS signingCertificateV2 attribute is in what the worker signed.
        found = find_signed(raw)
        assert found is not None
        assert bytes.fromhex("060b2a864886f70d010910022f") in found.signature_der


def test_key_is_wrapped_on_the_pipe(city: City, pool: SealPool) -> None:
    signer = city.signer()
    ref = pool.key_ref(signer)
    plain = signer.key.private_bytes(serialization.Encoding.DER,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    assert plain not in ref.wrapped and plain[40:80] not in ref.wrapped
    assert pool.key_ref(signer) is ref  # wrapped once per certificate
    assert "wrapped" not in repr(ref) and "secret" not in repr(pool)


def test_tampered_wrapped_key_is_refused(city: City) -> None:
    pool = SealPool(1)
    ref = pool.key_ref(city.signer())
    bad = KeyRef(ref.ident, ref.wrapped[:-1] + bytes([ref.wrapped[-1] ^ 1]),
                 ref.certificate, ref.chain, ref.rsa_pss, ref.include_certificates)
    _init_worker(pool._secret)  # run the worker's code in this process
    with pytest.raises(InvalidTag):
        _seal_job(bad, make_meta(), "", ATT, f"finance.docs@{DOMAIN}",
                  [f"stats.docs@{DOMAIN}"], NOW, DOMAIN)
    other = KeyRef(b"\x00" * 32, ref.wrapped, ref.certificate, ref.chain, ref.rsa_pss,
                   ref.include_certificates)  # the wrapped key bound to its certificate
    with pytest.raises(InvalidTag):
        _seal_job(other, make_meta(), "", ATT, f"finance.docs@{DOMAIN}",
                  [f"stats.docs@{DOMAIN}"], NOW, DOMAIN)
    done = _seal_job(ref, make_meta(), "", ATT, f"finance.docs@{DOMAIN}",
                     [f"stats.docs@{DOMAIN}"], NOW, DOMAIN)
    v = verify_message(done.raw, city.anchors, now=NOW)
    assert v.trusted, v


def test_signed_attributes_out_of_der_order_are_refused(city: City,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    prepared = prepare()
    good = prepared.finish(sign_detached(prepared.entity, city.signer(), now=NOW))
    assert verify_message(good, city.anchors, now=NOW).trusted
    # A signer that writes the SET OF attributes unsorted (and signs those very bytes).
    monkeypatch.setattr(seal_mod, "sorted", lambda xs: list(reversed(sorted(xs))),
                        raising=False)
    der = sign_detached(prepared.entity, city.signer(), now=NOW)
    raw = assemble_signed(prepared.outer_headers, prepared.entity, der)
    v = verify_message(raw, city.anchors, now=NOW)
    assert not v.trusted and v.reason == "malformed", v
    assert "DER order" in v.text
