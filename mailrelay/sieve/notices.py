"""Messages the Sieve stage writes itself: the rejection notice of RFC 5429 and the copy of
a redirected message. Pure: dates, ids and boundaries are arguments.
"""

from __future__ import annotations

import email.utils
from datetime import datetime

from mailrelay.headers import header_block


def _one_line(text: str) -> str:
    return " ".join(text.split())


def reject_notice(*, original: bytes, sender: str, recipient: str, reason: str,
                  reporting_ua: str, postmaster: str, now: datetime, message_id: str,
                  boundary: str) -> bytes:
    """RFC 5429 §2.1.1: the refusal goes back as an MDN (RFC 8098) with the disposition
    ``automatic-action/MDN-sent-automatically; deleted`` and the script's reason as the
    human-readable part; the original header is returned, not the content."""
    orig_id = ""
    for line in header_block(original).split(b"\r\n"):
        if line.lower().startswith(b"message-id:"):
            orig_id = line.split(b":", 1)[1].strip().decode("ascii", "replace")
    text = reason.replace("\r\n", "\n").replace("\n", "\r\n")
    if not text.endswith("\r\n"):
        text += "\r\n"
    head = (f"From: Mail Delivery Subsystem <{postmaster}>\r\n"
            f"To: <{sender}>\r\n"
            f"Subject: Rejected: message to {recipient}\r\n"
            f"Date: {email.utils.format_datetime(now)}\r\n"
            f"Message-ID: {message_id}\r\n"
            "Auto-Submitted: auto-replied (rejected)\r\n"  # RFC 3834 §5
            "MIME-Version: 1.0\r\n"
            f"Content-Type: multipart/report; report-type=disposition-notification;\r\n"
            f"\tboundary=\"{boundary}\"\r\n\r\n")
    mdn = (f"Reporting-UA: {reporting_ua}; cx-gateway Sieve\r\n"
           f"Final-Recipient: rfc822; {recipient}\r\n"
           + (f"Original-Message-ID: {orig_id}\r\n" if orig_id else "")
           + "Disposition: automatic-action/MDN-sent-automatically; deleted\r\n")
    body = (f"--{boundary}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n"
            f"Your message to {recipient} was rejected by the recipient's filter:\r\n\r\n"
            f"{text}\r\n"
            f"--{boundary}\r\n"
            "Content-Type: message/disposition-notification\r\n\r\n"
            f"{mdn}\r\n"
            f"--{boundary}\r\n"
            "Content-Type: text/rfc822-headers\r\n\r\n")
    return (head + body).encode("utf-8") + header_block(original) + (
        f"\r\n--{boundary}--\r\n".encode())


def redirected_copy(raw: bytes, account: str) -> bytes:
    """The message as redirected by `account`'s script: marked so that a loop back to this
    account is recognised (Delivered-To, as Postfix local(8) and Dovecot write it)."""
    who = _one_line(account)
    return (f"Delivered-To: {who}\r\nX-Sieve-Redirected-From: {who}\r\n").encode() + raw


def delivered_to(headers: list[str], account: str) -> bool:
    """Does the message already carry our Delivered-To for this account (a loop)?"""
    want = account.lower()
    return any(h.strip().strip("<>").lower() == want for h in headers)
