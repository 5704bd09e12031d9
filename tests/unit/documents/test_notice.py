"""The held notice to the sending unit: readable, auto-generated, names the reasons."""

from __future__ import annotations

import email
import email.policy

from mailrelay.documents.notice import HeldAt, held_notice

from .conftest import NOW, NUMBER, TITLE


def test_held_notice() -> None:
    raw = held_notice(document=42, title=TITLE, number=NUMBER,
                      held=[HeldAt("stats", "revoked", "the seal's certificate was revoked"),
                            HeldAt("town-lucheng", "expired", "expired at 2026-01-01")],
                      to=["zhang.san@cx.example"], domain="cx.example", now=NOW,
                      in_reply_to="<m1@cx.example>")
    assert b"\n" not in raw.replace(b"\r\n", b"")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["In-Reply-To"] == "<m1@cx.example>"
    assert TITLE in str(msg["Subject"]) and "stats, town-lucheng" in str(msg["Subject"])
    assert msg["X-CX-Doc-Held"] == "doc=42; units=stats, town-lucheng"
    body = msg.get_content()
    assert "stats: revoked" in body and "town-lucheng: expired" in body
    assert NUMBER in body and "cxgw doc status 42" in body


def test_odd_message_id_is_left_out() -> None:
    raw = held_notice(document=1, title="t", number="", held=[HeldAt("stats", "x", "y")],
                      to=["a@cx.example"], domain="cx.example", now=NOW,
                      in_reply_to="<中文@x>")
    assert b"In-Reply-To" not in raw
