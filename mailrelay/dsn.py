"""Delivery status notifications (RFC 3464) as multipart/report (RFC 6522), Postfix `bounce`.

`make_dsn` is pure: every date, the boundary and the Message-ID can be passed in, so the
output is byte-for-byte reproducible (tests/golden/dsn/*.in -> *.ref). The result is CRLF
and 7-bit unless the returned content itself is 8-bit (then Content-Transfer-Encoding 8bit,
and the sender of the DSN needs BODY=8BITMIME).

The caller sends the DSN with a null reverse-path (``MAIL FROM:<>``, RFC 5321 §4.5.5,
RFC 3464 §2) to `original_sender`, and never sends one for a message whose sender was
null (`is_bounce`).
"""

from __future__ import annotations

import email.utils
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

__all__ = ["DsnRecipient", "make_dsn", "is_bounce", "notify_wants"]

Action = Literal["failed", "delayed", "delivered", "relayed", "expanded"]
_ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")
_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
_BCHARS = re.compile(r"[^0-9A-Za-z'()+_,\-./:=?]")
_HIGH = re.compile(rb"[\x80-\xff]")
_EOL = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class DsnRecipient:
    """One recipient's fields (RFC 3464 §2.3); None leaves an optional field out."""

    final_recipient: str
    original_recipient: str | None  # ORCPT (RFC 3461 §4.2), if the client gave one
    action: Action
    status: str  # RFC 3463 code, e.g. "5.1.1"
    diagnostic: str | None  # "smtp; 550 5.1.1 no such user"
    remote_mta: str | None  # host that answered
    last_attempt: datetime | None
    will_retry_until: datetime | None = None  # only written for "delayed" (§2.3.8)


def is_bounce(sender: str, headers: bytes = b"") -> bool:
    """True when no DSN may be sent about this message: its reverse-path is null.

    RFC 5321 §4.5.5 / §6.1 and RFC 3464 §2: notifications are sent with a null
    reverse-path, and nothing is ever sent back to a null reverse-path, which is what
    stops bounce loops. Auto-Submitted (RFC 3834) governs automatic *replies*, not DSNs:
    a failed auto-reply with a real sender still gets its DSN, so `headers` is accepted
    for the callers' convenience but deliberately not used.
    """
    del headers
    return sender.strip() in ("", "<>")


def notify_wants(notify: str | None, what: str) -> bool:
    """Does a recipient's NOTIFY value ask for a `what` (SUCCESS/FAILURE/DELAY) notice?

    RFC 3461 §4.1: NEVER asks for none; without NOTIFY the MTA sends FAILURE notices and
    may send DELAY notices (we do).
    """
    if not notify:
        return what in ("FAILURE", "DELAY")
    return what in notify.upper().split(",")


def make_dsn(*, reporting_mta: str, postmaster: str, original_sender: str,
             original_headers: bytes, original_envelope_id: str | None,
             recipients: list[DsnRecipient], arrival_date: datetime, queue_id: str,
             ret_full: bytes | None = None, now: datetime, boundary: str | None = None,
             message_id: str | None = None) -> bytes:
    """Build a complete DSN message (headers and body, CRLF) to `original_sender`.

    `ret_full` returns the whole message as message/rfc822 (RET=FULL, RFC 3461 §4.3);
    otherwise only `original_headers` are returned as text/rfc822-headers. `boundary`
    and `message_id` default to fresh random values.
    """
    if not recipients:
        raise ValueError("a DSN needs at least one recipient")
    for r in recipients:
        if r.action not in _ACTIONS:
            raise ValueError(f"bad action {r.action!r}")  # RFC 3464 §2.3.3
        if not _STATUS.match(r.status):
            raise ValueError(f"bad status {r.status!r}")  # RFC 3464 §2.3.4
    domain = postmaster.rpartition("@")[2] or reporting_mta
    kind = _kind(recipients)
    ret_desc = "Undelivered Message" if kind == "failed" else "Message"
    if ret_full is not None:
        returned, ret_type = _crlf(ret_full), "message/rfc822"
    else:
        returned, ret_type = _headers_only(original_headers), "text/rfc822-headers"
        ret_desc += " Headers"
    eight_bit = _HIGH.search(returned) is not None
    cte = "8bit" if eight_bit else "7bit"  # RFC 2046 §5.2.1: message/rfc822 is 7bit/8bit

    explicit = boundary is not None
    if boundary is None:
        boundary = _new_boundary(queue_id, now, reporting_mta)
    else:
        _check_boundary(boundary)
    while (b"--" + boundary.encode()) in returned:  # RFC 2046 §5.1.1: must not occur inside
        if explicit:
            raise ValueError("boundary occurs in the returned content")
        boundary = _new_boundary(queue_id, now, reporting_mta)
    mid = message_id or f"<{_utc(now):%Y%m%d%H%M%S}.{_token(queue_id)}." \
                        f"{secrets.token_hex(6)}@{_one_line(reporting_mta)}>"

    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{_one_line(domain)}>",
        f"To: <{_one_line(original_sender)}>",
        f"Subject: {_SUBJECTS[kind]}",
        f"Date: {_date(now)}",
        f"Message-ID: {_one_line(mid)}",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5: machine-generated, not a human reply
        "MIME-Version: 1.0",
        # RFC 6522 §3: multipart/report with report-type=delivery-status (RFC 3464 §2)
        "Content-Type: multipart/report; report-type=delivery-status;",
        f' boundary="{boundary}"',
        f"Content-Transfer-Encoding: {cte}",
        "",
        "This is a MIME-encapsulated message.",
        "",
        "",
    ]
    text = _human_text(kind, reporting_mta, postmaster, recipients)
    status = _delivery_status(reporting_mta, original_sender, original_envelope_id,
                              arrival_date, queue_id, recipients)
    out = "\r\n".join(head).encode()
    out += _part(boundary, ["Content-Description: Notification",
                            "Content-Type: text/plain; charset=utf-8",
                            "Content-Transfer-Encoding: quoted-printable"], _qp(text))
    out += _part(boundary, ["Content-Description: Delivery report",
                            "Content-Type: message/delivery-status"], status.encode())
    out += _part(boundary, [f"Content-Description: {ret_desc}", f"Content-Type: {ret_type}",
                            f"Content-Transfer-Encoding: {cte}"], returned)
    out += f"--{boundary}--\r\n".encode()
    return out


_SUBJECTS = {"failed": "Undelivered Mail Returned to Sender",
             "delayed": "Delayed Mail (still being retried)",
             "success": "Successful Mail Delivery Report"}


def _kind(recipients: Iterable[DsnRecipient]) -> str:
    actions = {r.action for r in recipients}
    if "failed" in actions:
        return "failed"
    return "delayed" if "delayed" in actions else "success"


def _part(boundary: str, headers: list[str], body: bytes) -> bytes:
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    return (f"--{boundary}\r\n" + "\r\n".join(headers) + "\r\n\r\n").encode() + body + b"\r\n"


def _human_text(kind: str, mta: str, postmaster: str, recipients: list[DsnRecipient]) -> str:
    lines = [f"This is the mail system at host {mta}.", ""]
    if kind == "failed":
        lines += ["I'm sorry to have to inform you that your message could not",
                  "be delivered to one or more recipients. It's attached below.", "",
                  f"For further assistance, please send mail to <{postmaster}>.", "",
                  "If you do so, please include this problem report. You can",
                  "delete your own text from the attached returned message.", "",
                  "很抱歉，您的邮件未能投递给下列一个或多个收件人，原邮件附在后面。"
                  f"如需帮助，请联系 <{postmaster}>。"]
    elif kind == "delayed":
        lines += ["####################################################################",
                  "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
                  "####################################################################", "",
                  "Your message could not be delivered yet to the recipients listed",
                  "below. The mail system will keep trying; you will be told if it",
                  "finally gives up.", "",
                  "这只是提醒，无需重新发送：您的邮件暂时未能投递给下列收件人，系统将继续重试，"
                  "如最终失败会另行通知。"]
    else:
        lines += ["Your message was successfully delivered to the destination(s)",
                  "listed below. If the message was delivered to a mailbox you will",
                  "receive no further notifications. Otherwise you may still receive",
                  "notifications of mail delivery errors from other systems.", "",
                  "您的邮件已成功投递给下列收件人。"]
    lines += ["", "                   The mail system", ""]
    for r in recipients:
        detail = (r.diagnostic or "").partition(";")[2].strip() if r.diagnostic else ""
        if r.remote_mta and detail:
            detail = f"host {r.remote_mta} said: {detail}"
        if not detail:
            detail = {"failed": "delivery failed", "delayed": "delivery temporarily deferred",
                      "delivered": "delivered to mailbox", "relayed": "delivery via SMTP "
                      "relay (no further notifications)",
                      "expanded": "alias expanded"}[r.action] + f" (status {r.status})"
        line = f"<{r.final_recipient}>: {detail}"
        if r.action == "delayed" and r.will_retry_until is not None:
            line += f" (will retry until {_date(r.will_retry_until)})"
        lines.append(_one_line(line))
    return "\r\n".join(lines) + "\r\n"


def _delivery_status(mta: str, sender: str, envid: str | None, arrival: datetime,
                     queue_id: str, recipients: list[DsnRecipient]) -> str:
    # RFC 3464 §2.2: per-message fields, in the order of the grammar, extensions last.
    block = []
    if envid:
        block.append(f"Original-Envelope-Id: {_one_line(envid)}")  # §2.2.1
    block.append(f"Reporting-MTA: dns; {_one_line(mta)}")  # §2.2.2 (required)
    block.append(f"Arrival-Date: {_date(arrival)}")  # §2.2.5
    block.append(f"X-CX-Queue-ID: {_one_line(queue_id)}")  # extension-field (§2.4)
    block.append(f"X-CX-Sender: {_address(sender)}")
    blocks = ["\r\n".join(block)]
    for r in recipients:
        # RFC 3464 §2.3: per-recipient fields; Final-Recipient, Action, Status required.
        f = []
        if r.original_recipient:
            f.append(f"Original-Recipient: {_address(r.original_recipient)}")  # §2.3.1
        f.append(f"Final-Recipient: {_address(r.final_recipient)}")  # §2.3.2
        f.append(f"Action: {r.action}")  # §2.3.3
        f.append(f"Status: {r.status}")  # §2.3.4
        if r.remote_mta:
            f.append(f"Remote-MTA: dns; {_one_line(r.remote_mta)}")  # §2.3.5
        if r.diagnostic:
            diag = _one_line(r.diagnostic).strip()
            if ";" not in diag:
                diag = f"smtp; {diag}"
            f.append(_fold(f"Diagnostic-Code: {diag}"))  # §2.3.6
        if r.last_attempt is not None:
            f.append(f"Last-Attempt-Date: {_date(r.last_attempt)}")  # §2.3.7
        if r.action == "delayed" and r.will_retry_until is not None:
            f.append(f"Will-Retry-Until: {_date(r.will_retry_until)}")  # §2.3.8: delayed only
        blocks.append("\r\n".join(f))
    return "\r\n\r\n".join(blocks) + "\r\n"


def _address(addr: str) -> str:
    """address-type; address (RFC 3464 §2.3.2); UTF-8 as utf-8-addr-xtext (RFC 6533 §3)."""
    addr = _one_line(addr).strip().strip("<>")
    if addr.isascii():
        return f"rfc822; {addr}"
    enc = "".join(c if 0x21 <= ord(c) <= 0x7E and c not in "+=\\" else f"\\x{{{ord(c):X}}}"
                  for c in addr)
    return f"utf-8; {enc}"


def _fold(line: str, width: int = 78) -> str:
    """Fold a long field at spaces (RFC 5322 §2.2.3); never splits a word."""
    if len(line) <= width:
        return line
    out, cur = [], ""
    for word in line.split(" "):
        if cur and len(cur) + 1 + len(word) > width:
            out.append(cur)
            cur = " " + word
        else:
            cur = f"{cur} {word}" if cur else word
    out.append(cur)
    return "\r\n".join(out)


def _qp(text: str) -> bytes:
    """Quoted-printable (RFC 2045 §6.7) of CRLF text, soft line breaks at 76 columns."""
    out = []
    for line in text.split("\r\n")[:-1] if text.endswith("\r\n") else text.split("\r\n"):
        enc = "".join(ch if (33 <= ord(ch) <= 126 and ch != "=") or ch == " "
                      else "".join(f"={b:02X}" for b in ch.encode()) for ch in line)
        if enc.endswith(" "):
            enc = enc[:-1] + "=20"  # RFC 2045 §6.7 (3): no trailing white space
        while len(enc) > 76:
            cut = 75
            while enc[cut - 1] == "=" or enc[cut - 2] == "=":  # do not split an =XX
                cut -= 1
            out.append(enc[:cut] + "=")
            enc = enc[cut:]
        out.append(enc)
    return ("\r\n".join(out) + "\r\n").encode("ascii")


def _crlf(data: bytes) -> bytes:
    data = _EOL.sub(b"\r\n", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def _headers_only(headers: bytes) -> bytes:
    data = _crlf(headers)
    end = data.find(b"\r\n\r\n")
    return data[: end + 2] if end >= 0 else data


def _utc(d: datetime) -> datetime:
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d


def _date(d: datetime) -> str:
    """RFC 5322 §3.3 date-time; naive datetimes are taken as UTC."""
    return email.utils.format_datetime(_utc(d))


def _one_line(value: str) -> str:
    """No CR/LF inside a field: a value must never start a header of its own."""
    return " ".join(value.splitlines()) if ("\r" in value or "\n" in value) else value


def _token(value: str) -> str:
    return _BCHARS.sub("-", value)[:24] or "x"


def _check_boundary(b: str) -> None:
    if not b or len(b) > 70 or _BCHARS.search(b):  # RFC 2046 §5.1.1 bchars, 1..70
        raise ValueError(f"bad MIME boundary {b!r}")


def _new_boundary(queue_id: str, now: datetime, mta: str) -> str:
    # Postfix style "queueid.time/host", plus randomness so it can never be guessed.
    b = f"{_token(queue_id)}.{int(_utc(now).timestamp())}.{secrets.token_hex(8)}/{_token(mta)}"
    return b[:70]
