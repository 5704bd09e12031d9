"""Wires official documents into the process: the docs handler on the mail scheduler,
the CRL and OCSP responder on the `http` listener, and document events on the bus.

Built after the mail component (gateway.app imports wiring_mail first) and before the
HTTP component (always last), so the routes exist when HTTP starts.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import Any

from cryptography.hazmat.primitives import serialization

from cxkernel.errors import Invalid, NotFound
from cxkernel.listen import Subscription
from directory.certs import CRL_PATH, CRL_PEM_PATH, OCSP_PATH, CertificateService
from gateway.app import COMPONENT_FACTORIES, Endpoint, Services
from gateway.http import Request, Response
from mailrelay.documents.service import DocumentService

log = logging.getLogger("cxgw.docs")
MAX_OCSP_REQUEST = 16 * 1024


class DocsWiring:
    name = "docs"

    def __init__(self, s: Services) -> None:
        mail = s.components.get("mail")
        if mail is None:
            raise RuntimeError("official documents need the mail component: gateway.wiring_mail"
                               " must be built before gateway.wiring_docs")
        parts = mail.parts
        self.s = s
        self.parts = parts
        self._listen: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.certs = CertificateService.from_config(s.cfg, s.db.pool)
        # executor None: the loop's default thread pool (key objects do not pickle).
        self.service = DocumentService(s.db.pool, self.certs, parts.submitter, parts.book,
                                       s.cfg.server.domain, bus=s.bus, metrics=s.metrics)
        parts.scheduler.docs_handler = self.service.handle
        s.components["docs"] = self.service
        s.http.route(CRL_PATH, self._crl_der)
        s.http.route(CRL_PEM_PATH, self._crl_pem)
        s.http.route(OCSP_PATH, self._ocsp, methods=("GET", "POST"), max_body=MAX_OCSP_REQUEST)

    async def start(self) -> list[Endpoint]:
        if not await self.certs.has_ca():
            log.warning("no CA yet (`cxgw ca init`): arriving documents will be held")
        elif not self.certs.has_passphrase:
            log.warning("no CA passphrase configured: documents can be verified but not"
                        " sealed here, and CRL/OCSP are not served")
        self.certs.warn_if_passphrase_file_readable(self.s.cfg)
        # Issue #11 item 6: a key-compromise revocation (often from the CLI) re-examines
        # the documents it sealed; run now and whenever a certificate changes. The
        # process's self-healing LISTEN (ARCHITECTURE rule 12) re-examines after each
        # reconnection too: a revocation notified while nobody listened is found then.
        self._listen = await self.s.listen.subscribe("certificates_changed", self._on_certs,
                                                     self._on_certs)
        await self._reexamine()
        return []

    def _on_certs(self, *_args: Any) -> None:
        """A certificate changed, or the LISTEN connection came back: re-examine (in a
        task of its own, so the listener's other subscribers are not kept waiting). The
        trust state of this node (revocation answers, paths) is rebuilt before the next
        document is verified."""
        self.service.trust.invalidate()
        task = asyncio.get_running_loop().create_task(self._reexamine())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reexamine(self) -> None:
        try:
            await self.service.reexamine_compromised()
        except Exception:  # retried on the next change and at the next start
            log.exception("re-examining documents after a revocation failed")

    async def stop(self) -> None:
        # Issue #11 item 1: without the handler, document inboxes defer (4xx).
        self.parts.scheduler.docs_handler = None
        if self._listen is not None:
            sub, self._listen = self._listen, None
            await sub.close()
        for task in list(self._tasks):
            task.cancel()
        await self.service.own.close()  # documents being written get their COMMIT first
        self.service.close()  # the seal worker processes end with the component

    # ---- CRL and OCSP (RFC 5280 §5, RFC 6960 appendix A) -------------------------------
    async def _crl(self) -> Any:
        try:
            return await self.certs.crl()
        except NotFound:
            return Response(404, b"no CA\n")
        except Invalid:
            return Response(503, b"CRL unavailable\n")

    async def _crl_der(self, req: Request) -> Response:
        crl = await self._crl()
        if isinstance(crl, Response):
            return crl
        return Response(200, crl.public_bytes(serialization.Encoding.DER), "application/pkix-crl")

    async def _crl_pem(self, req: Request) -> Response:
        crl = await self._crl()
        if isinstance(crl, Response):
            return crl
        return Response(200, crl.public_bytes(serialization.Encoding.PEM),
                        "application/x-pem-file")

    async def _ocsp(self, req: Request) -> Response:
        if req.method == "POST":
            der = req.body
        else:
            # RFC 6960 A.1: GET {url}/{url-encoding of base-64 encoding of the DER request}
            encoded = req.path[len(OCSP_PATH):].lstrip("/")
            try:
                der = base64.b64decode(encoded.replace("-", "+").replace("_", "/") + "==")
            except (binascii.Error, ValueError):
                return Response(400, b"bad OCSP request encoding\n")
        if not der:
            return Response(400, b"empty OCSP request\n")
        try:
            answer = await self.certs.ocsp_response(der)
        except NotFound:
            return Response(404, b"no CA\n")
        except Invalid:
            return Response(503, b"OCSP unavailable\n")
        return Response(200, answer, "application/ocsp-response")


def factory(s: Services) -> Any:
    return DocsWiring(s)


COMPONENT_FACTORIES.append(factory)
