"""SPF, DMARC, the Authentication-Results header and the DNS cache, over an injected
zone (tests/dnszone.py ZoneResolver): no sockets, never the internet."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailrelay.inbound_auth import dmarc, results, spf
from mailrelay.inbound_auth.dns import CachingResolver, NotFound, TempError
from tests.dnszone import ZoneResolver

ZONE = {
    ("ex.org", "TXT"): ["v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 include:inc.ex.org "
                        "mx/30 a:web.ex.org ~all", "some other text"],
    ("inc.ex.org", "TXT"): ["v=spf1 ip4:198.51.100.7 -all"],
    ("ex.org", "MX"): ["10 mx1.ex.org", "20 mx2.ex.org"],
    ("mx1.ex.org", "A"): ["203.0.113.4"],
    ("mx2.ex.org", "A"): ["203.0.113.200"],
    ("web.ex.org", "A"): ["203.0.113.99"],
    ("red.ex.org", "TXT"): ["v=spf1 redirect=ex.org"],
    ("two.ex.org", "TXT"): ["v=spf1 -all", "v=spf1 +all"],
    ("macro.ex.org", "TXT"): ["v=spf1 exists:%{ir}.%{l1r-}._spf.%{d} -all"],
    ("1.2.0.192.alice._spf.macro.ex.org", "A"): ["127.0.0.2"],
    ("temp.ex.org", "TXT"): ["v=spf1 include:broken.ex.org -all"],
    ("broken.ex.org", "TXT"): ["SERVFAIL"],
    ("loop.ex.org", "TXT"): ["v=spf1 include:loop.ex.org -all"],
    ("void.ex.org", "TXT"): ["v=spf1 a:n1.ex.org a:n2.ex.org a:n3.ex.org -all"],
    ("bad.ex.org", "TXT"): ["v=spf1 ip4:300.1.1.1 -all"],
    ("none.ex.org", "A"): ["192.0.2.9"],
    ("helo.ex.org", "TXT"): ["v=spf1 ip4:192.0.2.50 -all"],
}


@pytest.mark.parametrize("ip,sender,expect", [
    ("192.0.2.77", "a@ex.org", "pass"),  # ip4 cidr
    ("2001:db8::5", "a@ex.org", "pass"),  # ip6
    ("::ffff:192.0.2.77", "a@ex.org", "pass"),  # IPv4-mapped
    ("198.51.100.7", "a@ex.org", "pass"),  # include
    ("203.0.113.5", "a@ex.org", "pass"),  # mx/30 covers .4-.7
    ("203.0.113.99", "a@ex.org", "pass"),  # a:web
    ("203.0.113.100", "a@ex.org", "softfail"),  # ~all
    ("198.51.100.7", "a@red.ex.org", "pass"),  # redirect
    ("10.0.0.1", "a@two.ex.org", "permerror"),  # two records
    ("192.0.2.1", "alice@macro.ex.org", "pass"),  # exists with %{ir} and %{l1r-}
    ("192.0.2.2", "alice@macro.ex.org", "fail"),
    ("10.0.0.1", "a@temp.ex.org", "temperror"),
    ("10.0.0.1", "a@loop.ex.org", "permerror"),  # more than 10 lookups
    ("10.0.0.1", "a@void.ex.org", "permerror"),  # more than 2 void lookups
    ("10.0.0.1", "a@bad.ex.org", "permerror"),
    ("10.0.0.1", "a@none.ex.org", "none"),  # no SPF record
    ("10.0.0.1", "a@nxdomain.ex.org", "none"),
    ("10.0.0.1", "a@localhost", "none"),  # not a FQDN
])
async def test_spf(ip, sender, expect):
    res = await spf.check_host(ip, sender, "helo.example", ZoneResolver(ZONE))
    assert res.result == expect, res


async def test_spf_null_sender_checks_helo():
    res = await spf.check_host("192.0.2.50", "", "helo.ex.org", ZoneResolver(ZONE))
    assert (res.result, res.identity, res.domain) == ("pass", "helo", "helo.ex.org")


def test_org_domain_and_alignment():
    assert dmarc.org_domain("mail.finance.km.gov.cn") == "km.gov.cn"
    assert dmarc.org_domain("a.b.example.org") == "example.org"
    assert dmarc.org_domain("news.example.co.uk") == "example.co.uk"
    assert dmarc.aligned("bounce.example.org", "example.org", "r")
    assert not dmarc.aligned("bounce.example.org", "example.org", "s")
    assert not dmarc.aligned("example.net", "example.org", "r")


def test_record_parsing():
    r = dmarc.parse_record("v=DMARC1; p=quarantine; sp=reject; adkim=s; pct=50; rua=mailto:x@y")
    assert r == dmarc.DmarcRecord("quarantine", "reject", "s", "r", 50)
    assert dmarc.parse_record("p=reject; v=DMARC1") is None  # v= must come first
    assert dmarc.parse_record("v=DMARC1; p=sometimes") is None
    assert dmarc.parse_record("v=DMARC1; p=none").pct == 100


async def test_record_lookup_falls_back_to_the_org_domain():
    z = ZoneResolver({("_dmarc.example.org", "TXT"): ["v=DMARC1; p=reject; sp=quarantine"],
                      ("_dmarc.dup.org", "TXT"): ["v=DMARC1; p=reject", "v=DMARC1; p=none"],
                      ("_dmarc.t.org", "TXT"): ["SERVFAIL"]})
    rec, where = await dmarc.fetch_record("news.example.org", z)
    assert rec is not None and where == "org"
    res = dmarc.evaluate("news.example.org", rec, where, spf=("fail", "x.net"), dkim_passes=[])
    assert (res.result, res.policy, res.disposition) == ("fail", "quarantine", "quarantine")
    assert await dmarc.fetch_record("dup.org", z) == (None, "")  # RFC 7489 §6.6.3
    with pytest.raises(TempError):
        await dmarc.fetch_record("t.org", z)


def test_evaluate():
    rec = dmarc.DmarcRecord("reject", None, "r", "s", 100)
    ok = dmarc.evaluate("example.org", rec, "", spf=("pass", "example.org"), dkim_passes=[])
    assert ok.result == "pass"
    # aspf=s: a subdomain envelope does not align; relaxed DKIM does.
    assert dmarc.evaluate("example.org", rec, "", spf=("pass", "b.example.org"),
                          dkim_passes=[]).disposition == "reject"
    assert dmarc.evaluate("example.org", rec, "", spf=("fail", "x"),
                          dkim_passes=["mail.example.org"]).result == "pass"
    temp = dmarc.evaluate("example.org", rec, "", spf=("temperror", "example.org"),
                          dkim_passes=[], temp=True)
    assert temp.result == "temperror"
    half = dmarc.DmarcRecord("reject", None, "r", "r", 50)
    out = dmarc.evaluate("example.org", half, "", spf=("fail", "x"), dkim_passes=[], rnd=0.9)
    assert (out.result, out.disposition) == ("fail", "quarantine")  # §6.6.4 sampled out
    assert dmarc.evaluate("example.org", None, "", spf=("fail", "x"),
                          dkim_passes=[]).result == "none"


def test_strip_ours_and_format():
    raw = (b"Received: x\r\nAuthentication-Results: MAIL.cx.example (forged);\r\n"
           b"\tdkim=pass header.d=bank.example\r\nauthentication-results: other.example;"
           b" spf=pass\r\nAuthentication-Results: (c) mail.cx.example; spf=pass\r\n"
           b"Subject: s\r\n\r\nAuthentication-Results: mail.cx.example; body stays\r\n")
    out = results.strip_ours(raw, "mail.cx.example")
    assert out == (b"Received: x\r\nauthentication-results: other.example; spf=pass\r\n"
                   b"Subject: s\r\n\r\nAuthentication-Results: mail.cx.example; body stays\r\n")
    h = results.format_header("mail.cx.example", [
        ("spf", "pass", "", [("smtp.mailfrom", "a@ex.org")]),
        ("dmarc", "fail", "p=reject dis=reject", [("header.from", "odd name;x")])])
    assert h == (b"Authentication-Results: mail.cx.example;\r\n\tspf=pass smtp.mailfrom=a@ex.org;"
                 b"\r\n\tdmarc=fail (p=reject dis=reject) header.from=\"odd name;x\"\r\n")
    assert results.format_header("m", []) == b"Authentication-Results: m; none\r\n"


async def test_cache_keeps_answers_and_nxdomain_but_not_temp_errors():
    inner = ZoneResolver({("a.org", "TXT"): ["x"], ("t.org", "TXT"): ["SERVFAIL"]})
    now = [0.0]
    c = CachingResolver(inner, size=2, clock=lambda: now[0])
    assert await c.lookup("A.org.", "TXT") == ["x"]
    assert await c.lookup("a.org", "TXT") == ["x"]
    for _ in range(2):
        with pytest.raises(NotFound):
            await c.lookup("gone.org", "TXT")
        with pytest.raises(TempError):
            await c.lookup("t.org", "TXT")
    assert inner.queries.count(("a.org", "TXT")) == 1
    assert inner.queries.count(("gone.org", "TXT")) == 1
    assert inner.queries.count(("t.org", "TXT")) == 2
    now[0] = 10_000.0  # expired
    await c.lookup("a.org", "TXT")
    assert inner.queries.count(("a.org", "TXT")) == 2


_RESULTS = {"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"}


_WORDS = ["all", "-all", "~all", "include:", "a", "mx", "ip4:", "ip6:", "exists:", "ptr",
          "redirect=", "exp=", "fz.example", "192.0.2.0/24", "/24", "//64", "%{d}", "%{ir}.",
          "%{l1r-}", "%%", "%{x}", "%", ":", "=", "+", "?", " ", " ", "::1", "."]


@given(st.lists(st.sampled_from(_WORDS), max_size=30).map("".join))
@settings(max_examples=300, deadline=None)
async def test_spf_never_crashes_on_any_record(record):
    zone = {("fz.example", "TXT"): ["v=spf1 " + record], ("fz.example", "A"): ["192.0.2.1"]}
    res = await spf.check_host("192.0.2.1", "a@fz.example", "h.example", ZoneResolver(zone))
    assert res.result in _RESULTS


@given(st.text(max_size=200))
def test_dmarc_record_parser_never_crashes(text):
    rec = dmarc.parse_record("v=DMARC1; " + text)
    assert rec is None or rec.p in ("none", "quarantine", "reject")


@given(st.binary(max_size=300))
def test_strip_ours_never_grows_or_crashes(raw):
    assert len(results.strip_ours(raw, "mail.cx.example")) <= len(raw)
