"""Verbs: queue list|show|retry|hold|release|delete|stats, mail send, dkim keygen."""

from __future__ import annotations

import argparse
import os
import sys
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from cxkernel.errors import Invalid
from gateway.cli.common import EXIT_OK, add_json, emit, with_services
from mailrelay.queue import admin

QUEUE_COLS = ["id", "queue_id", "sender", "recipient", "transport", "state", "attempts",
              "next_attempt", "last_error"]


def register(sub: Any) -> None:
    q = sub.add_parser("queue", help="the mail queue").add_subparsers(dest="sub", metavar="VERB")
    p = q.add_parser("list", help="pending entries (one per recipient)")
    p.add_argument("--state", choices=["ready", "active", "held"])
    p.add_argument("--limit", type=int, default=1000)
    add_json(p)
    p.set_defaults(func=queue_list)
    p = q.add_parser("show", help="one queue id: pending and finished recipients, headers")
    p.add_argument("id")
    add_json(p)
    p.set_defaults(func=queue_show)
    p = q.add_parser("retry", help="try now")
    p.add_argument("id", nargs="?")
    p.add_argument("--all", action="store_true", help="every waiting entry")
    p.set_defaults(func=queue_retry)
    for verb, fn, text in (("hold", queue_hold, "stop trying until released"),
                           ("release", queue_release, "resume a held entry"),
                           ("delete", queue_delete, "remove without a bounce")):
        p = q.add_parser(verb, help=text)
        p.add_argument("id", help="queue id or entry id")
        p.set_defaults(func=fn)
    p = q.add_parser("stats", help="counts by state and destination")
    add_json(p)
    p.set_defaults(func=queue_stats)

    m = sub.add_parser("mail", help="mail").add_subparsers(dest="sub", metavar="VERB")
    p = m.add_parser("send", help="inject a message through the submission stage")
    p.add_argument("--from", dest="sender", required=True)
    p.add_argument("--to", required=True, help="comma-separated recipients")
    p.add_argument("--subject", default="")
    p.add_argument("--body", help="text body (default: read standard input)")
    p.add_argument("--file", help="send this RFC 5322 message file as it is")
    add_json(p)
    p.set_defaults(func=mail_send)

    d = sub.add_parser("dkim", help="DKIM").add_subparsers(dest="sub", metavar="VERB")
    p = d.add_parser("keygen", help="make a DKIM key and print the DNS TXT record")
    p.add_argument("--selector", help="default: dkim.selector from the config")
    p.add_argument("--bits", type=int, default=2048)
    p.add_argument("--force", action="store_true", help="replace an existing key")
    p.set_defaults(func=dkim_keygen)


@with_services
async def queue_list(s: Any, a: argparse.Namespace) -> int:
    emit(a, await admin.list_entries(s.db.pool, a.state, a.limit), QUEUE_COLS)
    return EXIT_OK


@with_services
async def queue_show(s: Any, a: argparse.Namespace) -> int:
    info = await admin.show(s.db.pool, a.id)
    if a.json:
        emit(a, info)
        return EXIT_OK
    print(f"queue id {info['queue_id']}  size {info['size']}")
    for r in info["pending"]:
        print(f"  pending   {r['recipient']}  {r['state']}  attempts={r['attempts']}"
              f"  next={r['next_attempt']}  {r['last_error'] or ''}")
    for r in info["finished"]:
        print(f"  {r['status']:<9} {r['recipient']}  {r['at']}  {r['detail']}")
    print(info["headers"])
    return EXIT_OK


@with_services
async def queue_retry(s: Any, a: argparse.Namespace) -> int:
    if a.all:
        n = await admin.retry_all(s.db.pool)
    elif a.id:
        n = await admin.retry(s.db.pool, a.id)
    else:
        raise Invalid("give a queue id or --all")
    print(f"{n} entr{'y' if n == 1 else 'ies'} scheduled now")
    return EXIT_OK


@with_services
async def queue_hold(s: Any, a: argparse.Namespace) -> int:
    print(f"{await admin.hold(s.db.pool, a.id)} held")
    return EXIT_OK


@with_services
async def queue_release(s: Any, a: argparse.Namespace) -> int:
    print(f"{await admin.release(s.db.pool, a.id)} released")
    return EXIT_OK


@with_services
async def queue_delete(s: Any, a: argparse.Namespace) -> int:
    print(f"{await admin.delete(s.db.pool, a.id)} deleted")
    return EXIT_OK


@with_services
async def queue_stats(s: Any, a: argparse.Namespace) -> int:
    emit(a, await admin.stats(s.db.pool), ["state", "transport", "destination", "count", "oldest"])
    return EXIT_OK


@with_services
async def mail_send(s: Any, a: argparse.Namespace) -> int:
    from mailrelay.service import build
    from mailrelay.smtp.policy import normalise_line_endings, route_recipient
    from mailrelay.submit import ClientInfo, Submission
    recipients = [r.strip() for r in a.to.split(",") if r.strip()]
    if not recipients:
        raise Invalid("no recipients")
    if a.file:
        raw = Path(a.file).read_bytes()
    else:
        msg = EmailMessage()
        msg["From"] = a.sender
        msg["To"] = ", ".join(recipients)
        msg["Subject"] = a.subject
        body = a.body if a.body is not None else sys.stdin.read()
        msg.set_content(body)
        raw = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
    raw = normalise_line_endings(raw)
    parts = build(s.db.pool, s.cfg, s.metrics)
    await parts.book.reload()
    routes = {r: route_recipient(r, parts.book(), relay_allowed=True) for r in recipients}
    result = await parts.submitter.submit(Submission(
        a.sender, recipients, raw, ClientInfo("LOCAL", address="127.0.0.1"), "cli", routes))
    await parts.submitter.close()
    if a.json:
        emit(a, {"queue_id": result.queue_id, "recipients": result.recipients})
    else:
        print(f"queued as {result.queue_id} ({result.recipients} recipient(s))")
    return EXIT_OK


@with_services
async def dkim_keygen(s: Any, a: argparse.Namespace) -> int:
    from mailrelay.dkim import generate_key
    selector = a.selector or s.cfg.dkim.selector
    path = (Path(s.cfg.dkim.key_file) if s.cfg.dkim.key_file and not a.selector
            else s.cfg.state_path / "dkim" / f"{selector}.key")
    if path.exists() and not a.force:
        raise Invalid(f"{path} exists; use --force to replace it")
    pem, record = generate_key(selector, s.cfg.server.domain, a.bits)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    print(f"# key written to {path}; publish this record, then restart `cxgw serve`:")
    print(record)
    return EXIT_OK
