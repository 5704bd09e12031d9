"""Room nicknames: the PRECIS Nickname profile (RFC 8266) and the look-alike skeleton."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xmpp.features.muc.nick import NickError, compare_key, prepare, skeleton


@pytest.mark.parametrize("given_,prepared", [
    ("bob", "bob"), ("  Bob  ", "Bob"), ("Bob\u00a0\u2003the  builder", "Bob the builder"),
    ("Ｂｏｂ", "Bob"), ("ｶﾀｶﾅ", "カタカナ"), ("张三", "张三"), ("é", "é"), ("e\u0301", "é"),
    ("ﬁ", "fi"), ("Ⅸ", "IX"), ("♚ king", "♚ king")])
def test_prepare(given_: str, prepared: str) -> None:
    assert prepare(given_) == prepared
    assert prepare(prepared) == prepared  # idempotent (RFC 8266 §2.2)


@pytest.mark.parametrize("bad", ["", " \u3000 ", "a\u200bb", "a\u200db", "x\u202ey", "a\x00",
                                 "a\tb", "\ue000", "\ufdd0", "a\u2028b", "\U000e0001", "x" * 65])
def test_refused(bad: str) -> None:
    with pytest.raises(NickError):
        prepare(bad)


def test_comparison_is_case_insensitive() -> None:
    assert compare_key("BOB") == compare_key("bob") == compare_key("Ｂｏｂ")
    assert compare_key("bob") != compare_key("rob")


@pytest.mark.parametrize("a,b", [
    ("bob", "b\u043eb"), ("bob", "b\u03bfb"), ("alice", "\u0430lice"), ("Alice", "AIice"),
    ("paypal", "\u0440aypal"), ("hello", "he1lo"), ("boo", "b00"), ("modern", "rnodern"),
    ("wow", "vvow"), ("HEXA", "\u041d\u0415\u0425\u0410"), ("TOM", "\u03a4\u039f\u039c")])
def test_lookalikes_share_a_skeleton(a: str, b: str) -> None:
    assert skeleton(prepare(a)) == skeleton(prepare(b))


@pytest.mark.parametrize("a,b", [("bob", "rob"), ("张三", "李四"), ("anna", "anne"),
                                 ("bob", "bób")])
def test_different_names_differ(a: str, b: str) -> None:
    assert skeleton(a) != skeleton(b)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_prepare_is_idempotent_or_refuses(text: str) -> None:
    try:
        once = prepare(text)
    except NickError:
        return
    assert prepare(once) == once and once == once.strip() and "  " not in once
    skeleton(once)  # never raises
