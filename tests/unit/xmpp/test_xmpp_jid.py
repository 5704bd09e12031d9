"""JID parsing and normalisation (RFC 7622), with property tests."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from xmpp.jid import JID, JIDError, nameprep, nodeprep, parse_jid, resourceprep


@pytest.mark.parametrize(("text", "local", "domain", "resource"), [
    ("juliet@example.com", "juliet", "example.com", ""),
    ("juliet@example.com/foo", "juliet", "example.com", "foo"),
    ("juliet@example.com/foo bar", "juliet", "example.com", "foo bar"),
    ("juliet@example.com/foo@bar", "juliet", "example.com", "foo@bar"),
    ("juliet@example.com/foo/bar", "juliet", "example.com", "foo/bar"),
    ("foo\\20bar@example.com", "foo\\20bar", "example.com", ""),
    ("example.com", "", "example.com", ""),
    ("example.com/foobar", "", "example.com", "foobar"),
    ("a.example.com/b@example.net", "", "a.example.com", "b@example.net"),
    ("JULIET@EXAMPLE.COM/Balcony", "juliet", "example.com", "Balcony"),
    ("juliet@example.com./r", "juliet", "example.com", "r"),
    ("ĴÛĹÎÉŦ@example.com", "ĵûĺîéŧ", "example.com", ""),
    ("ｊｕｌｉｅｔ@example.com", "juliet", "example.com", ""),
    ("user@[::1]", "user", "[::1]", ""),
    ("user@192.0.2.1", "user", "192.0.2.1", ""),
    ("π@Ünicode.example", "π", "ünicode.example", ""),
    ("x@example.com/\u265a", "x", "example.com", "\u265a"),
])
def test_valid(text: str, local: str, domain: str, resource: str) -> None:
    jid = JID.parse(text)
    assert (jid.local, jid.domain, jid.resource) == (local, domain, resource)
    assert JID.parse(str(jid)) == jid


@pytest.mark.parametrize("text", [
    "", "@example.com", "juliet@", "juliet@example.com/", "juliet@/foo",
    "jul iet@example.com", "juliet\"@example.com", "jul&iet@example.com",
    "jul'iet@example.com", "jul:iet@example.com", "jul<iet@example.com",
    "jul>iet@example.com", "a@b@example.com", "exa mple.com", "-bad.example.com",
    "bad..example.com", "user@[not-ip]", "x@example.com/\x07", "x\x00@example.com",
    "a" * 1024 + "@example.com", "x@example.com/" + "r" * 1024,
    "x@" + ".".join(["a" * 63] * 17), "x@" + "a" * 64 + ".com", "x@exa_mple.com",
    "\u2163@example.com",  # ROMAN NUMERAL FOUR: has a compatibility decomposition
    "x@example.com/\u200b",  # zero-width space: ignorable
])
def test_invalid(text: str) -> None:
    with pytest.raises(JIDError):
        JID.parse(text)


def test_length_limit_is_in_octets() -> None:
    assert JID.parse("a" * 1023 + "@example.com").local == "a" * 1023
    with pytest.raises(JIDError):
        JID.parse("é" * 512 + "@example.com")  # 1024 octets
    JID.parse("é" * 511 + "@example.com")


def test_bare_and_full() -> None:
    jid = JID.parse("juliet@example.com/balcony")
    assert jid.bare == JID("juliet", "example.com")
    assert str(jid.bare) == "juliet@example.com" and jid.bare.is_bare
    assert jid.bare.with_resource("chamber") == JID("juliet", "example.com", "chamber")
    assert JID.make("Juliet", "Example.COM", "x") == JID("juliet", "example.com", "x")
    assert parse_jid("example.com") is parse_jid("example.com")  # cached


locals_ = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FF,
                                blacklist_characters="\"&'/:<>@"), min_size=1, max_size=30)
labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
domains = st.lists(labels, min_size=1, max_size=4).map(".".join)
resources = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x10FFF,
                                  blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn",
                                                        "Zl", "Zp")),
                    min_size=1, max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_parse_is_idempotent_or_rejects(text: str) -> None:
    try:
        jid = JID.parse(text)
    except JIDError:
        return
    again = JID.parse(str(jid))
    assert again == jid
    assert len(jid.local.encode()) <= 1023 and len(jid.resource.encode()) <= 1023


@settings(max_examples=300, deadline=None)
@given(local=locals_, domain=domains, resource=resources)
def test_roundtrip_of_generated_parts(local: str, domain: str, resource: str) -> None:
    try:
        lp = nodeprep(local)
    except JIDError:
        assume(False)
        return
    jid = JID.parse(f"{local}@{domain}/{resource}")
    assert jid.local == lp == nodeprep(lp)
    assert jid.domain == nameprep(domain) == domain
    assert jid.resource == resourceprep(resource)
    assert JID.parse(str(jid)) == jid
    assert jid.bare == JID.parse(f"{local}@{domain}")


@settings(max_examples=200, deadline=None)
@given(local=locals_, bad=st.sampled_from("\"&'/:<>@ \t"), domain=domains)
def test_forbidden_localpart_characters(local: str, bad: str, domain: str) -> None:
    with pytest.raises(JIDError):
        nodeprep(local + bad)


@settings(max_examples=100, deadline=None)
@given(st.text(st.characters(min_codepoint=0x41, max_codepoint=0x5A), min_size=1, max_size=20),
       domains)
def test_case_insensitive_local_and_domain(local: str, domain: str) -> None:
    a = JID.parse(f"{local}@{domain.upper()}")
    b = JID.parse(f"{local.lower()}@{domain}")
    assert a == b
