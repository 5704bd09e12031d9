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
                in_reply_to: str | None = None) -> bytes:
    """A text/plain message (CRLF) telling ``to`` why document ``document`` was held."""
    units = ", ".join(h.unit for h in held)
    lines = [
        f"公文被拦截（未投递）/ A document was held, not delivered: {title}",
        "",
        f"文号 / number: {number or '-'}",
        f"跟踪号 / tracking id: {document}  (cxgw doc status {document})",
        "",
    ]
    for h in held:
        lines.append(f"收文单位 / receiving unit {h.unit}: {h.reason}")
        lines.append(f"    {h.text}")
    lines += ["", "请核实电子印章后重新发送，或联系系统管理员。",
              "Check the seal and send the document again, or ask the administrator.", ""]
    body = "\r\n".join(lines).encode("utf-8")
    head = [
        header("From", mailbox(f"mailer-daemon@{domain}", "公文交换 Document exchange")),
        header("To", ", ".join(mailbox(a) for a in to)),
        text_header("Subject", f"公文被拦截 Document held: {title} ({units})"),
        header("Date", email.utils.format_datetime(now)),
        header("Message-ID", f"<{uuid.uuid4()}@{domain}>"),
        header("Auto-Submitted", "auto-generated"),  # RFC 3834 §5
        header("X-CX-Doc-Held", f"doc={document}; units={units}"),
        header("MIME-Version", "1.0"),
        header("Content-Type", "text/plain; charset=utf-8"),
        header("Content-Transfer-Encoding", "base64"),
    ]
    if in_reply_to and in_reply_to.isascii() and "\r" not in in_reply_to \
            and "\n" not in in_reply_to:
        head.insert(5, header("In-Reply-To", in_reply_to))
    return b"".join(head) + CRLF + base64_body(body)
