"""Documents submitted by clerks from an ordinary mail client, and where a message came from.

**Submission by mail.** A clerk of unit U sends an ordinary (unsealed) message, through
authenticated submission, to U's own document inbox ``U.docs@<domain>``. The Subject is
the title; the recipients, 文号 and urgency come from header fields or, since most mail
clients cannot add header fields, from ``key: value`` lines at the top of the text:

    收文单位: stats, town-lucheng      (or To-Units:, X-CX-Doc-To:; "all" for every unit)
    文号: 楚财发〔2026〕3号             (or Number:, X-CX-Doc-Number:)
    紧急程度: 加急                      (or Urgency:; 特急/加急/平件 or the English names)

Attachments are taken as sent. The gateway seals the document once with U's seal and
sends it to each unit like `cxgw doc send`.

**Origin.** The submission stage always prepends its own Received field naming the
protocol and the queue id, so the first field of a queued message tells, unforgeably,
whether it came from an authenticated submission (ESMTPA/ESMTPSA) or from this gateway's
own document stage (``from localhost (cxgw docs)`` ... ``with LOCAL``).
"""

from __future__ import annotations

import email.parser
import email.policy
import re
from dataclasses import dataclass, field
from email.message import EmailMessage

from cxkernel.errors import Invalid
from mailrelay.documents.docmime import Attachment, Classification, Urgency

_RECEIVED = re.compile(
    rb"^Received: from (?P<from>[^\r\n]*)\r\n(?:\t\(using [^\r\n]*\)\r\n)?\tby \S+ \(cx-gateway\) with (?P<proto>[A-Z]+)"
    rb" id (?P<qid>[0-9A-F]+)[;\r]")

URGENCY_WORDS = {"normal": Urgency.NORMAL, "urgent": Urgency.URGENT,
                 "extra-urgent": Urgency.EXTRA_URGENT, "平件": Urgency.NORMAL,
                 "普通": Urgency.NORMAL, "加急": Urgency.URGENT, "急件": Urgency.URGENT,
                 "特急": Urgency.EXTRA_URGENT}
FIELDS = {
    "to": ("x-cx-doc-to", "to-units", "收文单位", "主送"),
    "number": ("x-cx-doc-number", "number", "文号"),
    "urgency": ("x-cx-doc-urgency", "urgency", "紧急程度"),
    "classification": ("x-cx-doc-classification", "classification", "密级"),
}
_LINE = re.compile(r"^\s*([\w\u4e00-\u9fff-]+)\s*[:：]\s*(.*?)\s*$")


def submission_protocol(raw: bytes, queue_id: str) -> tuple[str, str] | None:
    """(protocol, from-clause) of the Received field our submission stage wrote for
    ``queue_id``, or None if the first field is not ours."""
    m = _RECEIVED.match(raw[:2048])
    if m is None or m["qid"].decode() != queue_id:
        return None
    return m["proto"].decode(), m["from"].decode("utf-8", "replace")


def is_authenticated_submission(raw: bytes, queue_id: str) -> bool:
    found = submission_protocol(raw, queue_id)
    return found is not None and found[0] in ("ESMTPA", "ESMTPSA")


def is_local_docs(raw: bytes, queue_id: str) -> bool:
    found = submission_protocol(raw, queue_id)
    return found == ("LOCAL", "localhost (cxgw docs)")


@dataclass(frozen=True)
class DocumentRequest:
    """What to send: everything `cxgw doc send` takes."""

    title: str
    number: str
    to: tuple[str, ...]
    urgency: Urgency = Urgency.NORMAL
    classification: Classification = Classification.INTERNAL
    note: str = ""
    attachments: list[Attachment] = field(default_factory=list)


def split_units(value: str) -> tuple[str, ...]:
    return tuple(u.lower() for u in re.split(r"[\s,，;；、]+", value.strip()) if u)


def parse_urgency(value: str) -> Urgency:
    try:
        return URGENCY_WORDS[value.strip().lower()]
    except KeyError:
        raise Invalid(f"unknown urgency {value!r} (normal, urgent, extra-urgent)") from None


def parse_classification(value: str) -> Classification:
    try:
        return Classification(value.strip().lower())
    except ValueError:
        raise Invalid(f"unknown classification {value!r} (public, internal)") from None


def _field_name(key: str) -> str | None:
    key = key.strip().lower()
    for name, aliases in FIELDS.items():
        if key in aliases:
            return name
    return None


def parse_submission(raw: bytes) -> DocumentRequest:
    """Read a clerk's mail as a document request (Invalid when something is missing)."""
    msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    values: dict[str, str] = {}
    for key, aliases in FIELDS.items():
        got = msg.get(aliases[0])
        if got:
            values[key] = str(got)
    body = msg.get_body(preferencelist=("plain",))
    text = ""
    if isinstance(body, EmailMessage):
        text = str(body.get_content())
    lines = text.replace("\r\n", "\n").split("\n")
    rest = 0
    for i, line in enumerate(lines):  # leading "key: value" lines, up to the first other
        if not line.strip():
            rest = i + 1
            continue
        m = _LINE.match(line)
        found = _field_name(m[1]) if m else None
        if m is None or found is None:
            break
        values.setdefault(found, m[2])
        rest = i + 1
    note = "\n".join(lines[rest:]).strip("\n")
    title = " ".join(str(msg.get("Subject", "")).split())
    if not title:
        raise Invalid("the document has no title (Subject)")
    if not values.get("to"):
        raise Invalid("no receiving units: add a line 收文单位: code, code (or all)")
    if not values.get("number"):
        raise Invalid("no document number: add a line 文号: ...")
    attachments = []
    for part in msg.iter_attachments():
        assert isinstance(part, EmailMessage)
        data = part.get_payload(decode=True)
        if isinstance(data, bytes) and part.get_filename():
            attachments.append(Attachment(str(part.get_filename()), data,
                                          part.get_content_type()))
    return DocumentRequest(
        title=title, number=values["number"].strip(), to=split_units(values["to"]),
        urgency=parse_urgency(values.get("urgency", "normal")),
        classification=parse_classification(values.get("classification", "internal")),
        note=note, attachments=attachments)
