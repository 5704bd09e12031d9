"""The pure rules of issue 12 items 6 and 7: no socket, no database."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxkernel.errors import Invalid
from directory.importer import csv_cell, decode, parse
from directory.model import check_name, check_password_strength, check_title, escape_controls
from mailrelay.addressbook import AddressBook, Expansion, LocalAccount
from mailrelay.smtp.policy import (
    ErrorBudget,
    PolicyError,
    Route,
    check_display_names,
    check_foreign_from_header,
    check_foreign_sender,
    check_list_sender,
)


def book() -> AddressBook:
    b = AddressBook("cx.example")
    for a in ("zhang.san", "li.si"):
        b.accounts[f"{a}@cx.example"] = LocalAccount(1, f"{a}@cx.example", True, 0, 0, "finance", ())
    b.aliases["director@cx.example"] = ["zhang.san@cx.example"]
    return b


def test_error_budget_soft_then_hard():
    b = ErrorBudget(soft=2, hard=4, sleep=1.5)
    assert [b.record() for _ in range(4)] == [(0.0, False), (0.0, False), (1.5, False), (1.5, True)]
    b.reset()
    assert b.record() == (0.0, False)


@pytest.mark.parametrize("sender", ["zhang.san@cx.example", "x@CX.EXAMPLE", "a@mail.cx.example"])
def test_foreign_sender_with_our_domain_refused(sender):
    with pytest.raises(PolicyError) as exc:
        check_foreign_sender(sender, book())
    assert exc.value.smtp_reply().startswith("550 5.7.1")


def test_foreign_sender_rules_let_others_through():
    check_foreign_sender("", book())  # the null sender (bounces)
    check_foreign_sender("a@notcx.example", book())
    check_foreign_from_header(b"From: a@example.org\r\n\r\nx", book())
    with pytest.raises(PolicyError):
        check_foreign_from_header(b"From: a@example.org, Boss <li.si@cx.example>\r\n\r\nx", book())


def test_list_rule():
    unit = Route("finance@cx.example", "local", "", Expansion("unit-list", ("a", "b"), unit="finance"))
    small = Route("director@cx.example", "local", "", Expansion("alias", ("a",)))
    big = Route("all@cx.example", "local", "", Expansion("alias", ("a", "b"), ("x@y.example",)))
    for r in (unit, big):
        with pytest.raises(PolicyError):
            check_list_sender(r, local_sender=False, open_lists=frozenset(), large_alias_members=3)
        check_list_sender(r, local_sender=True, open_lists=frozenset(), large_alias_members=3)
        check_list_sender(r, local_sender=False, open_lists=frozenset({"*"}), large_alias_members=3)
    check_list_sender(small, local_sender=False, open_lists=frozenset(), large_alias_members=3)
    check_list_sender(unit, local_sender=False, open_lists=frozenset({"finance@cx.example"}),
                      large_alias_members=3)


@pytest.mark.parametrize("value,ok", [
    ("张三 <zhang.san@cx.example>", True),
    ('"zhang.san@cx.example" <zhang.san@cx.example>', True),
    ('"director@cx.example" <zhang.san@cx.example>', True),  # an alias he owns
    ('"li.si@cx.example" <zhang.san@cx.example>', False),
    ('"li.si\uff20cx.example" <zhang.san@cx.example>', False),
    ('"li.si\ufe6bcx.example" <zhang.san@cx.example>', False),
    ("=?utf-8?b?" + base64.b64encode(b"li.si@cx.example").decode() + "?= <zhang.san@cx.example>",
     False),
    ('"ceo@bank.example" <zhang.san@cx.example>', False),
])
def test_display_names(value, ok):
    raw = f"From: {value}\r\nSubject: x\r\n\r\nx".encode()
    if ok:
        check_display_names(raw, "zhang.san@cx.example", book())
    else:
        with pytest.raises(PolicyError) as exc:
            check_display_names(raw, "zhang.san@cx.example", book())
        assert exc.value.smtp_reply().startswith("550 5.7.1")


@pytest.mark.parametrize("bad", ["a\x00", "a\x1b[31m", "a\r\nb", "a\x85", "a\u202eb", "=1", "+1",
                                 "-x", "@x", "\tx"])
def test_names_and_titles_refuse_controls_and_formulas(bad):
    with pytest.raises(Invalid):
        check_name(bad)
    with pytest.raises(Invalid):
        check_title(bad)


def test_titles_may_be_empty_passwords_no_controls():
    assert check_title("") == "" and check_title(" 副  局长 ") == "副 局长"
    with pytest.raises(Invalid):
        check_password_strength("Str0ng\x00pass", "a@cx.example", 8)
    check_password_strength("=Str0ng-pass", "a@cx.example", 8)  # a formula prefix is fine here


def test_csv_cell_and_escapes():
    assert csv_cell("=SUM(1)") == "'=SUM(1)" and csv_cell("\tx") == "'\\x09x"
    assert csv_cell("张三") == "张三"
    assert escape_controls("a\\b\x1b") == "a\\\\b\\x1b"


def test_decode_per_line():
    gbk_line = "张三,财政\n".encode("gbk")
    utf_line = "李四,财政\n".encode()
    text, errors = decode(b"h\n" + gbk_line + utf_line, "gbk")
    assert text is None and [n for n, _ in errors] == [3]
    text, errors = decode(b"h\n" + gbk_line + gbk_line + utf_line, "auto")
    assert text is None and [n for n, _ in errors] == [4]
    text, errors = decode(b"h\n" + gbk_line, "auto")
    assert errors == [] and text is not None and "张三" in text
    text, errors = decode(b"\xef\xbb\xbfh\n" + utf_line, "auto")
    assert errors == [] and text == "h\n李四,财政\n"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["utf-8", "gbk", "gb18030", "auto"]))
def test_decode_never_raises_and_names_real_lines(data, encoding):
    text, errors = decode(data, encoding)
    assert (text is None) == bool(errors)
    lines = data.count(b"\n") + 1
    assert all(1 <= n <= lines for n, _ in errors)


def test_unreadable_csv_is_a_row_error():
    text = "address,name,unit\n" + "a,b,c\n" + 'x,"' + "y" * 200_000 + '",finance\n'
    report = parse(text, "cx.example", 8)
    assert [n for n, _ in report.errors] == [3] and "unreadable CSV" in report.errors[0][1]
