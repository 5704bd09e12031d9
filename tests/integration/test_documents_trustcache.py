"""What a node keeps to verify fast (paths, revocation answers) is dropped when a
certificate is revoked, on every node (two TrustStores on one database play two nodes),
and the LISTEN of the server invalidates its store too."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from directory.certs import CertificateService
from mailrelay.documents.arrival import examine
from mailrelay.documents.docmime import Attachment, DocumentMeta
from mailrelay.documents.seal import Signer, seal_document
from mailrelay.documents.trust import TrustStore
from tests.integration.test_documents_helpers import CA_PASSPHRASE, wait_for


@pytest.fixture
def cfg_overrides():
    return {"ca": {"passphrase": CA_PASSPHRASE}}


def _examine(trust: TrustStore, raw: bytes):  # type: ignore[no-untyped-def]
    return examine(raw, trust.anchors, datetime.now(UTC), trust.revocation, trust.cache,
                   trust.issued)


async def test_revocation_drops_the_cached_trust_on_every_node(cfg, services) -> None:
    await services.directory.add_unit("finance", "市财政局")
    await services.directory.add_unit("stats", "市统计局")
    certs_a = CertificateService.from_config(cfg, services.db.pool)
    await certs_a.init_ca()
    seal = await certs_a.issue_seal("finance")
    key = await certs_a.seal_key("finance")
    meta = DocumentMeta(DocumentMeta.new_id(), "1号", "标题", "finance", ("stats",))
    raw = seal_document(meta, "正文", [Attachment("a.txt", b"A", "text/plain")],
                        Signer(key.key, key.certificate, (key.ca_certificate,)),
                        from_addr="finance.docs@cx.example",
                        to_addrs=["stats.docs@cx.example"], now=datetime.now(UTC),
                        domain="cx.example")
    pool_b = await asyncpg.create_pool(cfg.database.url, min_size=1, max_size=2)
    try:
        node_a = TrustStore(certs_a)
        node_b = TrustStore(CertificateService.from_config(cfg, pool_b))
        for node in (node_a, node_b):
            await node.refresh()
            for _ in range(2):  # the second verification is answered from the caches
                ex = _examine(node, raw)
                assert ex.verdict.trusted, ex.verdict.text
            assert node.cache.hits >= 1 and len(node.cache) == 1

        await certs_a.revoke(seal.serial, "key-compromise")

        for node in (node_a, node_b):
            # Without a refresh this node still holds "good" for the seal (that is the
            # cache); the revision in the database tells every node to drop it.
            assert _examine(node, raw).verdict.trusted
            assert await node.refresh()
            assert len(node.cache) == 0
            ex = _examine(node, raw)
            assert not ex.verdict.trusted and ex.verdict.reason == "revoked", ex.verdict
            assert "key_compromise" in ex.verdict.text
    finally:
        await pool_b.close()


async def test_certificates_changed_notify_invalidates_the_servers_store(server) -> None:
    """The server's LISTEN on ``certificates_changed`` (every node has one) marks its
    store for a rebuild before the next document is verified."""
    docs = server.services.components["docs"]
    await server.services.directory.add_unit("finance", "市财政局")
    await docs.certs.init_ca()
    await docs.trust.refresh()
    assert docs.trust.revision > 0 and not docs.trust.stale
    await docs.certs.issue_seal("finance")  # notifies certificates_changed
    assert await wait_for(lambda: _async_true(docs.trust.stale))
    assert await docs.trust.refresh()  # rebuilt, and the change reported
    assert not docs.trust.stale


async def _async_true(value: bool) -> bool:
    return value
