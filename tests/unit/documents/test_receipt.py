"""Signed receipts (sealed MDNs) round trip and refer to the right original."""

from __future__ import annotations

from collections.abc import Callable

from mailrelay.documents.docmime import parse_document
from mailrelay.documents.mimeparts import parse_headers, split_entity
from mailrelay.documents.receipt import (
    DISPOSITION,
    ReceiptRequest,
    parse_mdn,
    seal_receipt,
    verify_receipt,
)
from mailrelay.documents.verify import verify_message

from .conftest import DOMAIN, NOW, City


def _receive(city: City, raw: bytes) -> tuple[ReceiptRequest, bytes]:
    verdict = verify_message(raw, city.anchors, now=NOW)
    assert verdict.trusted and verdict.content is not None and verdict.digest is not None
    doc = parse_document(verdict.content)
    outer = parse_headers(split_entity(raw)[0])
    req = ReceiptRequest(original_message_id=str(outer["Message-ID"]),
                         original_sender=str(outer["Disposition-Notification-To"]),
                         doc_id=doc.meta.doc_id, title=doc.meta.title,
                         number=doc.meta.number, digest=verdict.digest)
    receipt = seal_receipt(req, city.signer(city.stats), receiver="stats.docs@cx.example",
                           receiver_unit="楚雄市统计局", receiver_name="楚雄市统计局",
                           now=NOW, domain=DOMAIN)
    return req, receipt


def test_receipt_round_trip(city: City, sealed: Callable[..., bytes]) -> None:
    req, receipt = _receive(city, sealed())
    result = verify_receipt(receipt, city.anchors, now=NOW,
                            original_message_id=req.original_message_id,
                            original_digest=req.digest, doc_id=req.doc_id,
                            expected_receiver="stats.docs@cx.example")
    assert result.trusted, result.text
    assert result.receipt is not None
    assert result.receipt.disposition == DISPOSITION
    assert result.receipt.final_recipient == "rfc822;stats.docs@cx.example"
    assert result.seal.signer_email == "stats.docs@cx.example"
    head = parse_headers(split_entity(receipt)[0])
    assert head["In-Reply-To"] == req.original_message_id
    assert head["Subject"].startswith("已签收")
    assert head["To"] == "finance.docs@cx.example"


def test_receipt_for_another_message_or_content(city: City,
                                                sealed: Callable[..., bytes]) -> None:
    req, receipt = _receive(city, sealed())
    other = verify_receipt(receipt, city.anchors, now=NOW,
                           original_message_id="<other@cx.example>",
                           original_digest=req.digest)
    assert not other.trusted and other.reason == "wrong-original"
    digest = verify_receipt(receipt, city.anchors, now=NOW,
                            original_message_id=req.original_message_id,
                            original_digest=b"\x00" * 32)
    assert not digest.trusted and digest.reason == "wrong-digest"
    doc = verify_receipt(receipt, city.anchors, now=NOW,
                         original_message_id=req.original_message_id,
                         original_digest=req.digest, doc_id="d-9999")
    assert not doc.trusted and doc.reason == "wrong-original"


def test_tampered_receipt_is_refused(city: City, sealed: Callable[..., bytes]) -> None:
    req, receipt = _receive(city, sealed())
    forged = receipt.replace(b"Disposition: manual-action/MDN-sent-manually; displayed",
                             b"Disposition: manual-action/MDN-sent-manually; deleted ")
    assert forged != receipt
    result = verify_receipt(forged, city.anchors, now=NOW,
                            original_message_id=req.original_message_id,
                            original_digest=req.digest)
    assert not result.trusted and result.reason == "bad-digest"


def test_document_is_not_a_receipt(city: City, sealed: Callable[..., bytes]) -> None:
    raw = sealed()
    result = verify_receipt(raw, city.anchors, now=NOW, original_message_id="<x@y>",
                            original_digest=b"")
    assert not result.trusted and result.reason == "not-a-receipt"


def test_parse_mdn_fields(city: City, sealed: Callable[..., bytes]) -> None:
    req, receipt = _receive(city, sealed())
    verdict = verify_message(receipt, city.anchors, now=NOW)
    assert verdict.content is not None
    mdn = parse_mdn(verdict.content)
    assert mdn.original_message_id == req.original_message_id
    assert mdn.digest == "sha-256:" + req.digest.hex()
    assert mdn.doc_id == req.doc_id
