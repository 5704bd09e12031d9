"""The MAIL/RCPT command-line parser, xtext and DSN parameter values (no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailrelay.addressbook import AddressBook, LocalAccount, role_targets
from mailrelay.dsn import notify_wants
from mailrelay.smtp.command import (
    CommandSyntaxError,
    DsnError,
    parse_mail,
    parse_notify,
    parse_orcpt,
    parse_rcpt,
    xtext_decode,
    xtext_encode,
)


@pytest.mark.parametrize("arg,address,params", [
    ("FROM:<>", "", {}),
    ("from:<>", "", {}),
    ("FROM: <>", "", {}),
    ("FROM:<> SIZE=100 BODY=8BITMIME", "", {"SIZE": "100", "BODY": "8BITMIME"}),
    ("FROM:<a.b@Example.ORG> ENVID=Abc+2Bx RET=hdrs",
     "a.b@Example.ORG", {"ENVID": "Abc+2Bx", "RET": "hdrs"}),
    ('FROM:<"odd > name"@example.org>', '"odd > name"@example.org', {}),
    ("FROM:<张三@例子.中国> SMTPUTF8", "张三@例子.中国", {"SMTPUTF8": None}),
])
def test_mail_paths(arg, address, params):
    p = parse_mail(arg)
    assert (p.address, p.params) == (address, params)


@pytest.mark.parametrize("arg", [
    None, "FROM:", "FROM:a@b", "FROM:<a@b", "FROM:<a@b>X=1", "FROM:<a@b> =1",
    "FROM:<a@b> X=", "FROM:<a@b> X=a=b", "FROM:<a@b> SIZE=1 size=2", "TO:<a@b>",
    "FROM:<a b@c>", "FROM:<@b>", "FROM:<a@>", "FROM:<" + "a" * 300 + "@b>",
    "FROM:<a@b\x00c>", "FROM:<a\udc80@b>", "FROM:<a@-b.org>", "FROM:<a@b..org>",
    "FROM:<a@[1.2.3.4\\]>",
])
def test_mail_syntax_errors(arg):
    with pytest.raises(CommandSyntaxError) as exc:
        parse_mail(arg)
    assert exc.value.code in (501, 553)


def test_rcpt_postmaster_and_routes():
    assert parse_rcpt("TO:<Postmaster>").address == "postmaster"
    assert parse_rcpt("TO:<postmaster@cx.example>").address == "postmaster@cx.example"
    p = parse_rcpt("TO:<@a.example,@b.example:u@c.example> NOTIFY=SUCCESS,DELAY")
    assert (p.route, p.address, p.params) == ("@a.example,@b.example", "u@c.example",
                                              {"NOTIFY": "SUCCESS,DELAY"})
    with pytest.raises(CommandSyntaxError):
        parse_rcpt("TO:<>")
    with pytest.raises(CommandSyntaxError):
        parse_rcpt("TO:<someone>")


@given(st.text(max_size=200))
def test_parsers_never_crash(arg):
    for parse in (parse_mail, parse_rcpt):
        try:
            parse("FROM:" + arg)
            parse("TO:" + arg)
        except CommandSyntaxError:
            pass


@given(st.text(min_size=1, max_size=80))
def test_xtext_round_trip(value):
    enc = xtext_encode(value)
    assert enc.isascii() and "=" not in enc and " " not in enc
    assert xtext_decode(enc) == value


def test_xtext_and_dsn_values():
    assert xtext_decode("a+2Bb+3Dc") == "a+b=c"
    for bad in ("a+2b", "a+", "a b", "a=b"):
        with pytest.raises(DsnError):
            xtext_decode(bad)
    assert parse_notify("delay,success") == "SUCCESS,DELAY"
    assert parse_notify("NEVER") == "NEVER"
    for bad in ("NEVER,SUCCESS", "", "SUCCESS,SUCCESS", "SOMETIMES"):
        with pytest.raises(DsnError):
            parse_notify(bad)
    assert parse_orcpt("rfc822;Li.Si+2Bx@cx.example") == ("rfc822", "Li.Si+x@cx.example")
    assert parse_orcpt("utf-8;\\x{5F20}@x.cn") == ("utf-8", "张@x.cn")  # RFC 6533 §3
    for bad in ("Li.Si@cx.example", ";a@b", "rfc822;", "utf-8;\\x{D800}@x", "rfc822;a+0Ab@x", "utf-8;\\x{110000}@x"):
        with pytest.raises(DsnError):
            parse_orcpt(bad)


def test_notify_wants():
    # RFC 3461 §4.1: no NOTIFY means failure (and delay) notices, never success ones.
    assert notify_wants(None, "FAILURE") and notify_wants(None, "DELAY")
    assert not notify_wants(None, "SUCCESS")
    assert notify_wants("SUCCESS", "SUCCESS") and not notify_wants("SUCCESS", "FAILURE")
    assert not any(notify_wants("NEVER", w) for w in ("SUCCESS", "FAILURE", "DELAY"))


def test_role_addresses():
    book = AddressBook("cx.example")
    for i, a in enumerate(("chief@cx.example", "li.si@cx.example")):
        book.accounts[a] = LocalAccount(i, a, True, 0, 0, "finance", ("unit-admin",))
    book.roles = role_targets("cx.example", {"abuse": "li.si"}, "chief@cx.example")
    assert book.lookup("postmaster@cx.example").accounts == ("chief@cx.example",)
    assert book.lookup("abuse@cx.example").accounts == ("li.si@cx.example",)
    book.accounts["postmaster@cx.example"] = LocalAccount(
        9, "postmaster@cx.example", True, 0, 0, "finance", ())
    # A real account of that name wins over the role routing.
    assert book.lookup("postmaster@cx.example").accounts == ("postmaster@cx.example",)
    assert role_targets("cx.example", {}, None) == {}
