"""Sieve without I/O: compile, run, vacation decisions (RFC 5228, 5173, 5232, 3894, 5230)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailrelay.sieve.interp import FileInto, Keep, Message, Redirect, Reject, Vacation, run
from mailrelay.sieve.script import SieveError, compile_script, unquote
from mailrelay.sieve.vacation import build_reply, handle_of, should_reply

RAW = (b"From: Boss <boss@city.example>\r\nTo: zhang.san@cx.example\r\n"
       b"Subject: =?utf-8?b?5pyI5oql?= report\r\nMessage-ID: <m1@city.example>\r\n"
       b"Content-Type: text/plain; charset=utf-8\r\n\r\nPlease read, URGENT.\r\n")


def msg(raw: bytes = RAW, sender: str = "boss@city.example") -> Message:
    return Message(raw, sender, "zhang.san@cx.example")


def actions(src: str, m: Message | None = None) -> list[object]:
    return list(run(compile_script(src), m or msg()))


def test_unquote() -> None:
    assert unquote('"a\\"b\\\\c\\d"') == 'a"b\\cd'  # RFC 5228 §2.4.2
    assert unquote("text:\nline\n..dot\n.") == "line\r\n.dot\r\n"


def test_implicit_keep_and_fileinto() -> None:
    assert actions("") == [Keep()]  # RFC 5228 §2.10.2
    assert actions('require "fileinto"; fileinto "Reports";') == [FileInto("Reports")]
    assert actions('require ["fileinto","copy"]; fileinto :copy "Reports";') == [
        FileInto("Reports"), Keep()]
    assert actions("discard;") == []


def test_header_tests_decode_and_match() -> None:
    src = ('require "fileinto"; if header :contains "subject" "月报" { fileinto "A"; }'
           ' elsif header :is "subject" "x" { fileinto "B"; } else { fileinto "C"; }')
    assert actions(src) == [FileInto("A")]  # RFC 5228 §2.7.2: RFC 2047 decoded
    assert actions('require "fileinto"; if header :matches "subject" "*REPORT" '
                   '{ fileinto "M"; }') == [FileInto("M")]  # i;ascii-casemap by default
    assert actions('require "fileinto"; if header :comparator "i;octet" :contains "subject" '
                   '"REPORT" { fileinto "M"; }') == [Keep()]


def test_address_envelope_size_exists() -> None:
    src = ('require ["fileinto","envelope"];'
           'if address :domain :is "from" "city.example" { fileinto "City"; stop; }'
           'fileinto "Never";')
    assert actions(src) == [FileInto("City")]
    assert actions('require ["envelope","fileinto"]; if envelope :localpart :is "from" "boss"'
                   ' { fileinto "E"; }') == [FileInto("E")]
    assert actions('if size :over 10K { discard; }') == [Keep()]
    assert actions('if size :under 10K { discard; }') == []
    assert actions('if exists ["from","x-nope"] { discard; }') == [Keep()]
    assert actions('if allof (exists "from", not exists "x-nope") { discard; }') == []


def test_body_flags_redirect_reject() -> None:
    assert actions('require "body"; if body :text :contains "urgent" { discard; }') == []
    src = ('require ["imap4flags","fileinto"]; addflag "\\\\Flagged"; addflag ["a", "b"];'
           'removeflag "a"; fileinto "X"; fileinto :flags "\\\\Seen" "Y";')
    assert actions(src) == [FileInto("X", ("\\Flagged", "b")), FileInto("Y", ("\\Seen",))]
    assert actions('redirect "a@b.example";') == [Redirect("a@b.example")]
    assert actions('require "copy"; redirect :copy "a@b.example";') == [
        Redirect("a@b.example"), Keep()]
    assert actions('require "reject"; reject "no thanks";') == [Reject("no thanks")]


def test_limits_keep_the_message() -> None:
    src = " ".join(f'redirect "a{i}@b.example";' for i in range(10))
    assert actions(src) == [Keep()]  # more redirects than allowed: keep, never lose


def test_unsupported_and_bad_scripts_refused() -> None:
    for src in ('require "variables";', "if {", 'fileinto "x";', "x" * 70_000,
                'require "fileinto"; if true { ' * 20 + "}" * 20):
        with pytest.raises(SieveError):
            compile_script(src)


VAC = 'require "vacation"; vacation :days 3 :subject "Away" "I am on leave.";'


def test_vacation_action_and_decision() -> None:
    [v, keep] = actions(VAC)
    assert isinstance(v, Vacation) and v.days == 3 and v.subject == "Away" and keep == Keep()
    me = ["zhang.san@cx.example"]
    assert should_reply(msg(), v, me) == (True, "")
    assert not should_reply(msg(sender=""), v, me)[0]  # a bounce
    assert not should_reply(msg(sender="MAILER-DAEMON@x.example"), v, me)[0]
    assert not should_reply(msg(sender="list-request@x.example"), v, me)[0]
    for extra in (b"Auto-Submitted: auto-replied\r\n", b"List-Id: <l.x.example>\r\n",
                  b"Precedence: bulk\r\n"):
        assert not should_reply(msg(extra + RAW), v, me)[0]
    assert should_reply(msg(b"Auto-Submitted: no\r\n" + RAW), v, me)[0]
    bcc = RAW.replace(b"To: zhang.san@cx.example", b"To: all@cx.example")
    assert should_reply(msg(bcc), v, me) == (False, "not addressed to the user")
    assert handle_of(v) == handle_of(Vacation("I am on leave.", 5, "Away"))


def test_vacation_reply() -> None:
    v = Vacation("I am on leave.\n回来再说。", subject=None)
    out = build_reply(msg(), v, "zhang.san@cx.example", datetime(2026, 12, 4, tzinfo=UTC),
                      "<r1@cx.example>")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"To: boss@city.example" in head and b"Auto-Submitted: auto-replied" in head
    assert b"In-Reply-To: <m1@city.example>" in head
    assert b"Subject: =?utf-8?" in head  # "Auto: 月报 report", encoded
    assert body == "I am on leave.\r\n回来再说。\r\n".encode()
