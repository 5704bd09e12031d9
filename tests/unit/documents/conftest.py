"""Shared fixtures: one city CA, unit seals, a foreign CA, and document builders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from directory.ca import (
    CertificateAuthority,
    IssuedCertificate,
    KeyAlgorithm,
    create_root_ca,
    issue_unit_seal,
)
from mailrelay.documents.chain import TrustAnchors
from mailrelay.documents.docmime import Attachment, DocumentMeta, Urgency
from mailrelay.documents.seal import PreparedDocument, Signer, prepare_document, seal_document

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
DOMAIN = "cx.example"
TITLE = "关于印发《楚雄市2026年数字政府建设工作要点》的通知"
NUMBER = "楚政办发〔2026〕12号"
FILENAME = "附件1：楚雄市2026年数字政府建设工作要点（征求意见稿）.docx"


@dataclass(frozen=True)
class City:
    ca: CertificateAuthority
    finance: IssuedCertificate
    stats: IssuedCertificate
    anchors: TrustAnchors

    def signer(self, seal: IssuedCertificate | None = None, **kw: object) -> Signer:
        seal = seal or self.finance
        return Signer(seal.key, seal.certificate, (self.ca.certificate,), **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def city() -> City:
    ca = create_root_ca(now=NOW - timedelta(days=30))
    finance = issue_unit_seal(ca, unit_code="finance", unit_name="楚雄市财政局",
                              domain=DOMAIN, now=NOW - timedelta(days=1),
                              crl_url="http://ca.cx.example/root.crl",
                              ocsp_url="http://ca.cx.example/ocsp")
    stats = issue_unit_seal(ca, unit_code="stats", unit_name="楚雄市统计局", domain=DOMAIN,
                            now=NOW - timedelta(days=1), algorithm=KeyAlgorithm.ECDSA_P256)
    return City(ca, finance, stats, TrustAnchors((ca.certificate,)))


@pytest.fixture(scope="session")
def foreign_ca() -> CertificateAuthority:
    return create_root_ca(now=NOW - timedelta(days=30), common_name="CX City Root CA",
                          organization="CX City Government")  # same name, other key


def make_meta(**kw: object) -> DocumentMeta:
    base: dict[str, object] = dict(doc_id="d-0001", number=NUMBER, title=TITLE,
                                   from_unit="finance", to_units=("stats", "town-lucheng"),
                                   urgency=Urgency.URGENT, from_unit_name="楚雄市财政局")
    base.update(kw)
    return DocumentMeta(**base)  # type: ignore[arg-type]


ATTACHMENTS = [Attachment(FILENAME, "工作要点正文……".encode() * 500,
                          "application/vnd.openxmlformats-officedocument."
                          "wordprocessingml.document")]


def prepare(meta: DocumentMeta | None = None,
            attachments: list[Attachment] | None = None) -> PreparedDocument:
    return prepare_document(meta or make_meta(), "请各单位认真贯彻执行。\n此致",
                            ATTACHMENTS if attachments is None else attachments,
                            from_addr="finance.docs@cx.example",
                            to_addrs=["stats.docs@cx.example", "town-lucheng.docs@cx.example"],
                            now=NOW, domain=DOMAIN)


@pytest.fixture
def sealed(city: City) -> Callable[..., bytes]:
    def make(signer: Signer | None = None, meta: DocumentMeta | None = None,
             from_addr: str = "finance.docs@cx.example") -> bytes:
        return seal_document(meta or make_meta(), "请各单位认真贯彻执行。\n此致", ATTACHMENTS,
                             signer or city.signer(), from_addr=from_addr,
                             to_addrs=["stats.docs@cx.example"], now=NOW, domain=DOMAIN)
    return make
