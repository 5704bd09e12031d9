"""The notice a sending unit gets when one of its documents is held at a receiving unit.

The issue asks that a held document be "visible to the sender and the admin with its
reason": the admin has `cxgw doc list/status`; the sender's clerks get this plain mail
in their INBOX (delivered directly, never through a document inbox, so it cannot loop).
It is an auto-generated message (RFC 3834 §5) and names no configuration or internals,
only the document, the receiving units and the verdict.
"""

from __future__ import annotations

import email.utils
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from .mimeparts import CRLF, base64_body, header, mailbox, text_header


@dataclass(frozen=True)
class HeldAt:
    unit: str
    reason: str
    text: str


def held_notice(*, document: int, title: str, number: str, held: Sequence[HeldAt],
                to: Sequence[str], domain: str, now: datetime,
                in_reply_to: str | None = None, verified: bool = True,
                signer: str | None = None) -> bytes:
    """A text/plain message (CRLF) telling ``to`` why document ``document`` was held.

    Issue #11 item 8: only verified facts are stated as such. With ``verified`` False the
    title came from an unsigned Subject field: it is quoted as that, never in our
    Subject line (which names the certificate instead)."""
    units = ", ".join(h.unit for h in held)
    shown = " ".join(title.split())[:200]
    if verified:
        first = f"公文被拦截（未投递）/ A document was held, not delivered: {title}"
        subject = f"公文被拦截 Document held: {title} ({units})"
        about = [f"文号 / number: {number or '-'}"]
    else:
        first = ("以贵单位证书签名的邮件被拦截（未投递）/ A message signed with your"
                 f" certificate ({signer or '-'}) was held, not delivered")
        subject = f"公文被拦截 Document held: signed by {signer or '-'} ({units})"
        about = [f"未经签名的主题 / unsigned Subject field, as sent: \"{shown}\""]
    lines = [
        first,
        "",
        *about,
        f"跟踪号 / tracking id: {document}  (cxgw doc status {document})",
        "",
    ]
    for h in held:
        lines.append(f"收文单位 / receiving unit {h.unit}: {h.reason}")
        lines.append(f"    {h.text}")
    lines += ["", "请核实电子印章后重新发送，或联系系统管理员。",
              "Check the seal and send the document again, or ask the administrator.", ""]
    return _notice(lines, to=to, subject=subject, domain=domain, now=now,
                   in_reply_to=in_reply_to,
                   marker=("X-CX-Doc-Held", f"doc={document}; units={units}"))


def revoked_notice(*, document: int, title: str, number: str, from_unit: str, unit: str,
                   to: Sequence[str], domain: str, now: datetime,
                   in_reply_to: str | None = None) -> bytes:
    """Issue #11 item 6: a document delivered as trusted is no longer trusted: the seal
    that sealed it was revoked for key compromise."""
    lines = [
        f"公文印章已因密钥泄露被吊销，本公文不再可信 / The seal of this document was revoked"
        f" for key compromise: it is no longer trusted: {title}",
        "",
        f"文号 / number: {number or '-'}",
        f"发文单位 / from: {from_unit}",
        f"收文单位 / receiving unit: {unit}",
        f"跟踪号 / tracking id: {document}  (cxgw doc status {document})",
        "",
        "请勿依据本公文办理，请与发文单位核实。",
        "Do not act on this document; confirm it with the sending unit.",
        "",
    ]
    return _notice(lines, to=to, subject=f"公文印章已吊销 Seal revoked after delivery: {title}",
                   domain=domain, now=now, in_reply_to=in_reply_to,
                   marker=("X-CX-Doc-Revoked", f"doc={document}; unit={unit}"))


def _notice(lines: list[str], *, to: Sequence[str], subject: str, domain: str,
            now: datetime, in_reply_to: str | None, marker: tuple[str, str]) -> bytes:
    """A plain-text notice from the document exchange's mailer-daemon (RFC 3834 §5
    auto-generated), threaded on `in_reply_to` when it is a clean one-line field."""
    body = "\r\n".join(lines).encode("utf-8")
    head = [
        header("From", mailbox(f"mailer-daemon@{domain}", "公文交换 Document exchange")),
        header("To", ", ".join(mailbox(a) for a in to)),
        text_header("Subject", subject),
        header("Date", email.utils.format_datetime(now)),
        header("Message-ID", f"<{uuid.uuid4()}@{domain}>"),
        header("Auto-Submitted", "auto-generated"),  # RFC 3834 §5
        header(*marker),
        header("MIME-Version", "1.0"),
        header("Content-Type", "text/plain; charset=utf-8"),
        header("Content-Transfer-Encoding", "base64"),
    ]
    if in_reply_to and in_reply_to.isascii() and "\r" not in in_reply_to \
            and "\n" not in in_reply_to:
        head.insert(5, header("In-Reply-To", in_reply_to))
    return b"".join(head) + CRLF + base64_body(body)
