"""Vacation (RFC 5230) and auto-reply hygiene (RFC 3834): whether to answer, and the answer.

Pure: the caller looks up and records the (account, sender, handle) history that limits
answers to one per sender per ``:days``. Never answers the null sender, daemons, lists,
bulk mail or anything auto-submitted, nor mail that was not addressed to the user
(RFC 5230 §4.5-4.6); the answer goes from the null envelope sender with
``Auto-Submitted: auto-replied`` so that other responders stay quiet too.
"""

from __future__ import annotations

import email.utils
import hashlib
from datetime import datetime
from email.header import Header

from .interp import Message, Vacation

_DAEMONS = ("mailer-daemon", "postmaster", "listserv", "majordomo", "owner-", "-request",
            "noreply", "no-reply", "bounce")
_LIST_FIELDS = ("list-id", "list-help", "list-subscribe", "list-unsubscribe", "list-post",
                "list-owner", "list-archive")


def handle_of(v: Vacation) -> str:
    """RFC 5230 §4.2: without :handle, the reason, subject and from identify the response."""
    if v.handle:
        return v.handle
    return hashlib.sha256("\0".join((v.reason, v.subject or "", v.from_ or "")).encode()
                          ).hexdigest()[:32]


def should_reply(m: Message, v: Vacation, mine: list[str]) -> tuple[bool, str]:
    """(answer?, why not) for this message to one of `mine` (the user's addresses)."""
    sender = m.sender.lower()
    if not sender:
        return False, "null sender"  # RFC 5230 §4.6 / RFC 3834 §2
    local = sender.split("@", 1)[0]
    if any(local.startswith(d) if d.endswith("-") else local.endswith(d) if d.startswith("-")
           else local == d for d in _DAEMONS):
        return False, "daemon sender"
    auto = [a.strip().lower() for a in m.headers("auto-submitted")]
    if any(a and not a.startswith("no") for a in auto):
        return False, "auto-submitted"  # RFC 3834 §2
    if any(m.headers(f) for f in _LIST_FIELDS):
        return False, "list mail"  # RFC 5230 §4.6: never to lists
    prec = " ".join(m.headers("precedence")).lower()
    if any(p in prec for p in ("bulk", "list", "junk")):
        return False, "bulk mail"
    addressed = {a.lower() for _, a in email.utils.getaddresses(
        [h for f in ("to", "cc", "bcc", "resent-to", "resent-cc") for h in m.headers(f)])}
    wanted = {a.lower() for a in [*mine, *v.addresses]}
    if not addressed & wanted:
        return False, "not addressed to the user"  # RFC 5230 §4.5
    if sender in wanted:
        return False, "own message"
    return True, ""


def build_reply(m: Message, v: Vacation, me: str, now: datetime, message_id: str) -> bytes:
    """The response message (RFC 5230 §5): to the envelope sender, threaded on the original."""
    orig_subject = (m.headers("subject") or [""])[0]
    subject = v.subject or f"Auto: {orig_subject}".strip()  # §5.2
    orig_id = (m.headers("message-id") or [""])[0].strip()
    refs = " ".join(x for x in (*(m.headers("references") or [""])[:1], orig_id) if x)
    fields = [
        ("From", v.from_ or me),
        ("To", m.sender),
        ("Subject", Header(subject, "utf-8").encode() if not subject.isascii() else subject),
        ("Date", email.utils.format_datetime(now)),
        ("Message-ID", message_id),
        ("Auto-Submitted", "auto-replied (vacation)"),  # RFC 3834 §5
        ("Precedence", "bulk"),
        ("MIME-Version", "1.0"),
    ]
    if orig_id:
        fields += [("In-Reply-To", orig_id), ("References", refs)]  # §5.3
    if v.mime:  # §5.8: the reason is a MIME entity of its own
        head = "".join(f"{k}: {val}\r\n" for k, val in fields)
        body = v.reason.replace("\r\n", "\n").replace("\n", "\r\n")
        return (head + body).encode("utf-8")
    fields += [("Content-Type", "text/plain; charset=utf-8"),
               ("Content-Transfer-Encoding", "8bit")]
    head = "".join(f"{k}: {val}\r\n" for k, val in fields)
    text = v.reason.replace("\r\n", "\n").replace("\n", "\r\n")
    return (head + "\r\n" + text + ("" if text.endswith("\r\n") else "\r\n")).encode("utf-8")
