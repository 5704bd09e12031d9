"""Property test for the one entry point that decides what a document inbox delivers:
whatever bytes arrive, `examine` never raises, and whenever it trusts a message, the
copy it would deliver verifies on its own and holds nothing the seal does not cover
(no preamble, no epilogue, no unsigned part)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailrelay.documents.arrival import examine
from mailrelay.documents.chain import VerifyCache
from mailrelay.documents.seal import sign_detached
from mailrelay.documents.verify import verify_message

from .conftest import NOW, City, prepare

MARK = b"INJECTED-7f3a"


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=10_000),
       where=st.sampled_from(["head", "preamble", "epilogue", "between", "body"]),
       junk=st.sampled_from([b"", b"\r\n", b"--", b"Content-Type: text/plain\r\n\r\n"]))
def test_examine_never_raises_and_trusts_only_what_is_signed(city: City, cut: int,
                                                             where: str, junk: bytes) -> None:
    prepared = prepare()
    raw = prepared.finish(sign_detached(prepared.entity, city.signer()))
    head_end = raw.index(b"\r\n\r\n") + 4
    body = raw[head_end:]
    extra = junk + MARK + b"\r\n"
    if where == "head":
        raw = raw[:head_end - 2] + b"X-Injected: " + MARK + b"\r\n\r\n" + body
    elif where == "preamble":
        raw = raw[:head_end] + extra + body
    elif where == "epilogue":
        raw = raw + extra
    elif where == "between":
        first = body.index(b"\r\n--", 10)
        raw = raw[:head_end] + body[:first] + b"\r\n" + extra + body[first:]
    else:
        pos = head_end + cut % max(len(body), 1)
        raw = raw[:pos] + extra + raw[pos:]
    ex = examine(raw, city.anchors, NOW, None, VerifyCache())
    if ex.verdict.trusted:
        assert ex.delivered is not None
        assert MARK not in ex.delivered
        assert verify_message(ex.delivered, city.anchors, now=NOW).trusted
