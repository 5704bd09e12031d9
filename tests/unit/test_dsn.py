"""DSN generation: golden files (tests/golden/dsn/*.in -> *.ref) and a parse-back check.

Regenerate the .ref files after an intended change with ``CX_UPDATE_GOLDEN=1 pytest ...``
and review the diff.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailrelay.dsn import DsnRecipient, is_bounce, make_dsn

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "dsn"
CASES = sorted(p.stem for p in GOLDEN.glob("*.in"))
_DATES = ("arrival_date", "now", "last_attempt", "will_retry_until")


def _params(name: str) -> dict[str, Any]:
    raw = json.loads((GOLDEN / f"{name}.in").read_text(encoding="utf-8"))

    def conv(d: dict[str, Any]) -> dict[str, Any]:
        return {k: datetime.fromisoformat(v) if k in _DATES and v else v for k, v in d.items()}

    p = conv(raw)
    p["recipients"] = [DsnRecipient(**conv(r)) for r in p["recipients"]]
    p["original_headers"] = p["original_headers"].encode()
    if p.get("ret_full") is not None:
        p["ret_full"] = p["ret_full"].encode()
    return p


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str) -> None:
    out = make_dsn(**_params(name))
    ref = GOLDEN / f"{name}.ref"
    if os.environ.get("CX_UPDATE_GOLDEN"):
        ref.write_bytes(out)
    assert out == ref.read_bytes()


def test_golden_cases_exist() -> None:
    assert len(CASES) >= 5


@pytest.mark.parametrize("name", CASES)
def test_parse_back(name: str) -> None:
    p = _params(name)
    out = make_dsn(**p)
    assert b"\n" not in out.replace(b"\r\n", b"") and b"\r" not in out.replace(b"\r\n", b"")
    assert all(len(line) <= 998 for line in out.split(b"\r\n"))  # RFC 5322 §2.1.1
    msg: Any = email.message_from_bytes(out, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    parts: Any = msg.get_payload()
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@cx.example"
    assert msg["To"].addresses[0].addr_spec == p["original_sender"]
    assert msg["Message-ID"] == p["message_id"]
    assert not msg.defects
    text, status, returned = parts
    assert text.get_content_type() == "text/plain"
    body = text.get_content()
    assert "mail.cx.example" in body
    assert any("\u4e00" <= ch <= "\u9fff" for ch in body)  # the Chinese line
    for r in p["recipients"]:
        assert r.final_recipient in body

    assert status.get_content_type() == "message/delivery-status"
    blocks: list[Any] = status.get_payload()
    per_msg, per_rcpt = blocks[0], blocks[1:]
    assert per_msg["Reporting-MTA"] == "dns; mail.cx.example"
    assert per_msg["Original-Envelope-Id"] == p["original_envelope_id"]
    assert per_msg["X-CX-Queue-ID"] == p["queue_id"]
    assert len(per_rcpt) == len(p["recipients"])
    for block, r in zip(per_rcpt, p["recipients"], strict=True):
        assert block["Action"] == r.action and block["Status"] == r.status
        final = block["Final-Recipient"]
        assert final.startswith("utf-8; " if not r.final_recipient.isascii() else "rfc822; ")
        assert (block["Remote-MTA"] is None) == (r.remote_mta is None)
        if r.diagnostic:
            assert " ".join(str(block["Diagnostic-Code"]).split()) == r.diagnostic
        assert (block["Will-Retry-Until"] is not None) == (r.action == "delayed")

    if p.get("ret_full") is not None:
        assert returned.get_content_type() == "message/rfc822"
        inner = returned.get_payload()[0]
        assert inner["From"] == "zhao@cx.example"
        assert msg["Content-Transfer-Encoding"] == "8bit"
    else:
        assert returned.get_content_type() == "text/rfc822-headers"
        assert b"Subject:" in returned.get_payload(decode=True)


def _simple(**kw: Any) -> bytes:
    t = datetime(2024, 5, 6, 7, 0, tzinfo=UTC)
    args: dict[str, Any] = dict(
        reporting_mta="mail.cx.example", postmaster="postmaster@cx.example",
        original_sender="a@cx.example", original_headers=b"Subject: x\r\n\r\nbody",
        original_envelope_id=None, arrival_date=t, queue_id="Q1", now=t,
        recipients=[DsnRecipient("b@peer.example", None, "failed", "5.1.1",
                                 "smtp; 550 5.1.1 unknown", "mx.peer.example", t)])
    args.update(kw)
    return make_dsn(**args)


def test_defaults_are_fresh_and_unique() -> None:
    a, b = _simple(), _simple()
    assert a != b  # random boundary and Message-ID
    msg: Any = email.message_from_bytes(a, policy=email.policy.default)
    assert msg.get_boundary() and "Q1" in msg.get_boundary()
    assert msg["Message-ID"].endswith("@mail.cx.example>")
    assert b"body" not in a  # headers only


def test_no_header_injection() -> None:
    out = _simple(original_sender="a@cx.example\r\nBcc: victim@x", queue_id="Q\n1")
    assert b"\r\nBcc:" not in out and b"\nBcc:" not in out


def test_boundary_collision_and_validation() -> None:
    with pytest.raises(ValueError):
        _simple(boundary="XYZ", ret_full=b"Subject: x\r\n\r\n--XYZ\r\n")
    with pytest.raises(ValueError):
        _simple(boundary="bad boundary\r\n")
    with pytest.raises(ValueError):
        _simple(recipients=[DsnRecipient("b@x", None, "failed", "550", None, None, None)])
    with pytest.raises(ValueError):
        _simple(recipients=[])


def test_is_bounce() -> None:
    assert is_bounce("", b"")
    assert is_bounce("<>", b"")
    assert not is_bounce("a@cx.example", b"Auto-Submitted: auto-replied\r\n")
    assert not is_bounce("MAILER-DAEMON@peer.example", b"")
