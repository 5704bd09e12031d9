"""Verbs: ca, seal, cert (the CA/RA) and doc (official documents).

Each verb parses, calls one service function (directory.certs or
mailrelay.documents.service), and renders a table or `--json`. Secrets come from the
configuration, $CXGW_CA_PASSPHRASE or standard input, never from the command line.
"""

from __future__ import annotations

import argparse
import mimetypes
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization

from cxkernel.errors import Invalid, NotFound
from directory.certs import CertificateService
from gateway.cli.common import add_json, emit, with_services
from mailrelay.documents.docmime import Attachment

CERT_COLS = ["serial", "kind", "address", "unit", "state", "not_after", "reason"]
DOC_COLS = ["id", "title", "number", "from", "units", "state", "verdict"]
RCPT_COLS = ["unit", "state", "verdict", "reason", "verified_at", "delivered_at", "clerks",
             "signed_at", "signed_by"]


def register(sub: Any) -> None:
    ca = sub.add_parser("ca", help="the city certificate authority").add_subparsers(
        dest="sub", metavar="VERB")
    p = ca.add_parser("init", help="create the root CA (key encrypted with the CA passphrase)")
    p.add_argument("--name", default="CX City Root CA", help="common name of the CA")
    p.add_argument("--organization", default="CX City Government")
    add_json(p)
    p.set_defaults(func=ca_init)
    p = ca.add_parser("cert", help="print the CA certificate (PEM) for outside verifiers")
    p.set_defaults(func=ca_cert)

    seal = sub.add_parser("seal", help="unit electronic seals").add_subparsers(
        dest="sub", metavar="VERB")
    p = seal.add_parser("issue", help="issue a unit's seal certificate")
    p.add_argument("unit")
    add_json(p)
    p.set_defaults(func=seal_issue)

    cert = sub.add_parser("cert", help="personal S/MIME certificates").add_subparsers(
        dest="sub", metavar="VERB")
    p = cert.add_parser("issue", help="issue a personal S/MIME certificate")
    p.add_argument("address")
    add_json(p)
    p.set_defaults(func=cert_issue)
    p = cert.add_parser("export", help="export key and certificate as PKCS#12 "
                        "(password read from standard input)")
    p.add_argument("address")
    p.add_argument("--p12", required=True, metavar="FILE")
    p.add_argument("--legacy", action="store_true", help="3DES/SHA-1 for old Outlook/Windows 7")
    p.set_defaults(func=cert_export)
    p = cert.add_parser("revoke", help="revoke a certificate (seal or personal)")
    p.add_argument("serial")
    p.add_argument("--reason", default="unspecified",
                   help="key-compromise, superseded, affiliation-changed, "
                        "cessation-of-operation, certificate-hold, privilege-withdrawn")
    p.add_argument("--compromised-at", metavar="ISO-DATE",
                   help="with key-compromise: documents sealed since then are no longer"
                        " trusted (default: all it sealed)")
    add_json(p)
    p.set_defaults(func=cert_revoke)
    p = cert.add_parser("list", help="certificates with serials and states")
    p.add_argument("--unit")
    p.add_argument("--kind", choices=["seal", "personal"])
    add_json(p)
    p.set_defaults(func=cert_list)

    doc = sub.add_parser("doc", help="official documents").add_subparsers(
        dest="sub", metavar="VERB")
    p = doc.add_parser("send", help="seal a document once and send it to units")
    p.add_argument("--from", dest="from_unit", required=True, metavar="UNIT")
    p.add_argument("--to", required=True, metavar="UNIT[,UNIT...]|all")
    p.add_argument("--title", required=True)
    p.add_argument("--number", required=True, help="文号")
    p.add_argument("--urgency", default="normal", choices=["normal", "urgent", "extra-urgent"])
    p.add_argument("--classification", default="internal", choices=["public", "internal"])
    p.add_argument("--note", default="", help="covering text (default: none)")
    p.add_argument("--by", help="who sends it (recorded)")
    p.add_argument("files", nargs="*", metavar="FILE")
    add_json(p)
    p.set_defaults(func=doc_send)
    p = doc.add_parser("receipt", help="sign for a document (签收): sealed receipt to the sender")
    p.add_argument("id")
    p.add_argument("--by", metavar="ADDRESS", help="the clerk who signs for it")
    p.add_argument("--unit", help="the receiving unit (when the document went to several)")
    add_json(p)
    p.set_defaults(func=doc_receipt)
    p = doc.add_parser("status", help="per receiving unit: queued, delivered, held, signed")
    p.add_argument("id")
    add_json(p)
    p.set_defaults(func=doc_status)
    p = doc.add_parser("list", help="sent and received documents")
    p.add_argument("--unit")
    p.add_argument("--state", choices=["queued", "delivered", "held", "signed",
                                        "revoked-after-delivery"])
    p.add_argument("--limit", type=int, default=500)
    add_json(p)
    p.set_defaults(func=doc_list)
    p = doc.add_parser("show", help="show a document; --raw writes the sealed message")
    p.add_argument("id")
    p.add_argument("--raw", action="store_true", help="the message exactly as delivered")
    p.add_argument("--unit", help="the copy delivered to this unit")
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    add_json(p)
    p.set_defaults(func=doc_show)


def _certs(s: Any) -> CertificateService:
    return CertificateService.from_config(s.cfg, s.db.pool)


@asynccontextmanager
async def _documents(s: Any) -> AsyncIterator[Any]:
    """The document service on a submission stage of this process (the server's
    scheduler picks the queued rows up through NOTIFY)."""
    from mailrelay.documents.service import DocumentService
    from mailrelay.service import build
    parts = build(s.db.pool, s.cfg, s.metrics)
    await parts.book.reload()
    try:
        yield DocumentService(s.db.pool, _certs(s), parts.submitter, parts.book,
                              s.cfg.server.domain, metrics=s.metrics)
    finally:
        await parts.submitter.close()


def _cert_row(info: Any) -> dict[str, Any]:
    return info.as_dict()


# ---- ca / seal / cert ------------------------------------------------------------------
@with_services
async def ca_init(s: Any, a: argparse.Namespace) -> int:
    cert = await _certs(s).init_ca(a.name, a.organization)
    emit(a, {"subject": cert.subject.rfc4514_string(), "serial": f"{cert.serial_number:x}",
             "not_after": cert.not_valid_after_utc.isoformat(),
             "sha256": cert.fingerprint(hashes.SHA256()).hex(":")})
    return 0


@with_services
async def ca_cert(s: Any, a: argparse.Namespace) -> int:
    cert = await _certs(s).ca_certificate()
    sys.stdout.write(cert.public_bytes(serialization.Encoding.PEM).decode("ascii"))
    return 0


@with_services
async def seal_issue(s: Any, a: argparse.Namespace) -> int:
    emit(a, _cert_row(await _certs(s).issue_seal(a.unit)))
    return 0


@with_services
async def cert_issue(s: Any, a: argparse.Namespace) -> int:
    emit(a, _cert_row(await _certs(s).issue_personal(a.address)))
    return 0


@with_services
async def cert_export(s: Any, a: argparse.Namespace) -> int:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise Invalid("no export password on standard input")
    data = await _certs(s).export_p12(a.address, password.encode("utf-8"), legacy=a.legacy)
    fd = os.open(a.p12, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    print(f"wrote {a.p12} ({len(data)} bytes)")
    return 0


@with_services
async def cert_revoke(s: Any, a: argparse.Namespace) -> int:
    since = None
    if a.compromised_at:
        try:
            since = datetime.fromisoformat(a.compromised_at)
        except ValueError:
            raise Invalid(f"--compromised-at: not an ISO date/time: {a.compromised_at!r}"
                          ) from None
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
    info = await _certs(s).revoke(a.serial, a.reason, compromised_at=since)
    row = _cert_row(info)
    if info.reason == "key-compromise":
        # Issue #11 item 6: documents it sealed (since the compromise) are re-examined
        # now; the running server tells the receiving clerks (mail and XMPP).
        async with _documents(s) as docs:
            await docs.revoked_after_delivery(info.serial, since)
            row["documents_revoked_after_delivery"] = \
                await docs.count_revoked_after_delivery(info.serial)
    emit(a, row)
    return 0


@with_services
async def cert_list(s: Any, a: argparse.Namespace) -> int:
    rows = [_cert_row(c) for c in await _certs(s).certificates(kind=a.kind, unit=a.unit)]
    emit(a, rows, CERT_COLS)
    return 0


# ---- doc -------------------------------------------------------------------------------
def _attachment(path: str) -> Attachment:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise NotFound(f"cannot read {path}: {exc.strerror}") from None
    ctype = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
    return Attachment(p.name, data, ctype)


@with_services
async def doc_send(s: Any, a: argparse.Namespace) -> int:
    files = [_attachment(f) for f in a.files]
    async with _documents(s) as docs:
        sent = await docs.send(from_unit=a.from_unit, to=a.to.split(","), title=a.title,
                               number=a.number, attachments=files, note=a.note,
                               urgency=a.urgency, classification=a.classification,
                               origin="cli", sent_by=a.by)
    emit(a, sent.as_dict())
    return 0


@with_services
async def doc_receipt(s: Any, a: argparse.Namespace) -> int:
    async with _documents(s) as docs:
        emit(a, await docs.receipt(a.id, by=a.by, unit=a.unit))
    return 0


@with_services
async def doc_status(s: Any, a: argparse.Namespace) -> int:
    async with _documents(s) as docs:
        st = await docs.status(a.id)
    if a.json:
        emit(a, st)
        return 0
    head = {k: st[k] for k in ("id", "doc_id", "title", "number", "from", "origin", "state")}
    emit(a, head)
    print()
    emit(a, st["recipients"], RCPT_COLS)
    for r in st["recipients"]:
        if r["state"] in ("held", "revoked-after-delivery"):
            print(f"{r['state']} at {r['unit']}: {r['reason']}: {r['reason_text']}")
        if r.get("warning"):
            print(f"warning at {r['unit']}: {r['warning']}")
    for e in st["events"]:
        print(f"{e['at']} {e['unit'] or '-'} {e['kind']}: {e['detail']}")
    return 0


@with_services
async def doc_list(s: Any, a: argparse.Namespace) -> int:
    async with _documents(s) as docs:
        rows = await docs.list(unit=a.unit, state=a.state, limit=a.limit)
    if not a.json:
        for r in rows:
            if len(r["units"]) > 6:
                r["units"] = r["units"][:5] + [f"(+{len(r['units']) - 5})"]
    emit(a, rows, DOC_COLS)
    return 0


@with_services
async def doc_show(s: Any, a: argparse.Namespace) -> int:
    async with _documents(s) as docs:
        if not a.raw:
            emit(a, await docs.status(a.id))
            return 0
        data = await docs.raw(a.id, a.unit)
    if a.output:
        Path(a.output).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0
