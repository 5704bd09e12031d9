"""SRS0 rewriting and reversal (mailrelay.srs) and the Sieve stage's pure helpers."""

from __future__ import annotations

from datetime import UTC, datetime

from mailrelay.sieve.delivery import clean_flags, mailbox_name
from mailrelay.sieve.notices import delivered_to, redirected_copy, reject_notice
from mailrelay.srs import MAX_AGE_DAYS, SRS

NOW = 1_780_000_000.0
srs = SRS(b"k" * 32, "cx.example")


def test_forward_and_reverse_round_trip() -> None:
    a = srs.forward("Alice.Liu@Outside.example", NOW)
    assert a.startswith("SRS0=") and a.endswith("=Outside.example=Alice.Liu@cx.example")
    assert srs.reverse(a, NOW) == "Alice.Liu@Outside.example"
    assert srs.reverse(a.lower(), NOW) == "alice.liu@outside.example"  # MTAs may lowercase


def test_null_and_own_senders_are_not_rewritten() -> None:
    assert srs.forward("", NOW) == ""
    assert srs.forward("zhang.san@cx.example", NOW) == "zhang.san@cx.example"


def test_reverse_refuses_forged_expired_foreign_and_other_keys() -> None:
    a = srs.forward("alice@outside.example", NOW)
    h = a.split("=")[1]
    assert srs.reverse(a.replace(h, "AAAA" if h != "AAAA" else "BBBB", 1), NOW) is None
    assert srs.reverse(a, NOW + (MAX_AGE_DAYS + 1) * 86400) is None
    assert srs.reverse(a, NOW + MAX_AGE_DAYS * 86400) is not None
    assert srs.reverse(a.replace("@cx.example", "@other.example"), NOW) is None
    assert SRS(b"other key", "cx.example").reverse(a, NOW) is None
    assert srs.reverse("SRS0=bad@cx.example", NOW) is None
    assert srs.reverse("zhang.san@cx.example", NOW) is None


def test_an_srs_sender_from_elsewhere_survives_a_second_forward() -> None:
    theirs = "SRS0=abcd=XY=orig.example=bob@relay.example"
    a = srs.forward(theirs, NOW)
    assert srs.reverse(a, NOW) == theirs


def test_flags_and_mailbox_names() -> None:
    assert clean_flags(["\\Seen", "\\seen", "$Label1", "\\Recent", "bad flag", "a\\b", ""]) == (
        "\\Seen", "$Label1")
    assert mailbox_name("inbox") == "INBOX" and mailbox_name("Work/Reports") == "Work/Reports"


def test_loop_marker_and_reject_notice() -> None:
    raw = b"From: a@outside.example\r\nMessage-ID: <m1@x>\r\nSubject: s\r\n\r\nbody\r\n"
    copy = redirected_copy(raw, "zhang.san@cx.example")
    assert copy.startswith(b"Delivered-To: zhang.san@cx.example\r\n") and copy.endswith(raw)
    assert delivered_to([" <Zhang.San@cx.example>"], "zhang.san@cx.example")
    assert not delivered_to(["li.si@cx.example"], "zhang.san@cx.example")
    n = reject_notice(original=raw, sender="a@outside.example", recipient="zhang.san@cx.example",
                      reason="Go away.", reporting_ua="mail.cx.example",
                      postmaster="MAILER-DAEMON@cx.example",
                      now=datetime(2026, 12, 4, tzinfo=UTC), message_id="<n1@cx.example>",
                      boundary="B1")
    assert b"Original-Message-ID: <m1@x>\r\n" in n and b"Go away.\r\n" in n
    assert b"Disposition: automatic-action/MDN-sent-automatically; deleted" in n
    assert b"body" not in n.split(b"--B1")[-2]  # only the header comes back
    assert n.endswith(b"--B1--\r\n")
