"""RemoteDelivery against real aiosmtpd sinks on 127.0.0.1, port 0, in the test's own loop.

No network: MX lookups go through a fake query function; sinks run via
`loop.create_server(lambda: SMTP(...))` (not the threaded Controller).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cxkernel.config import RelayConfig
from mailrelay.delivery.mx import (
    DnsFailure,
    DnsTemporary,
    MXRecord,
    MXResolver,
    NoRecords,
    NoSuchDomain,
)
from mailrelay.delivery.remote import RcptResult, RemoteDelivery

MSG = (b"From: a@cx.example\r\nTo: b@peer.example\r\nSubject: hi\r\n"
       b"Message-ID: <1@cx.example>\r\n\r\nHello.\r\n")


@dataclass
class Sink:
    """An aiosmtpd handler that records what arrives and answers what it is told."""

    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    drop_at_data: bool = False
    strip_ehlo: tuple[str, ...] = ()
    received: list[dict[str, Any]] = field(default_factory=list)
    auth: list[tuple[bytes, bytes]] = field(default_factory=list)
    tls: list[bool] = field(default_factory=list)

    async def handle_EHLO(self, server: SMTP, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [r for r in responses if not any(x in r for x in self.strip_ehlo)]

    async def handle_RCPT(self, server: SMTP, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        self.tls.append(session.ssl is not None)
        if self.drop_at_data and server.transport is not None:
            server.transport.close()  # the reply to "." never arrives
        if self.data_reply:
            return self.data_reply
        self.received.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                              "data": envelope.original_content,
                              "options": list(envelope.mail_options)})
        return "250 2.0.0 queued as X1"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the sink's STARTTLS)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sink.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return d / "cert.pem", d / "key.pem"


StartSink = Callable[..., Awaitable[int]]


@pytest.fixture
async def start_sink() -> AsyncIterator[StartSink]:
    """Start an aiosmtpd SMTP server in this loop; returns its port."""
    servers: list[asyncio.Server] = []

    async def start(handler: Sink, **kw: Any) -> int:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="sink.test", loop=loop, **kw), "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for s in servers:
        s.close()
        await s.wait_closed()


def smarthost(port: int, **kw: Any) -> RemoteDelivery:
    return RemoteDelivery(RelayConfig(smarthost=f"127.0.0.1:{port}", **kw), "relay.cx.example",
                          timeout=5)


def statuses(results: list[RcptResult]) -> list[tuple[str, str, int, str]]:
    return [(r.recipient, r.status, r.code, r.enhanced) for r in results]


async def test_all_accepted(start_sink: StartSink) -> None:
    sink = Sink()
    port = await start_sink(sink)
    res = await smarthost(port).deliver("a@cx.example", ["b@peer.example", "c@peer.example"], MSG)
    assert statuses(res) == [("b@peer.example", "ok", 250, "2.0.0"),
                             ("c@peer.example", "ok", 250, "2.0.0")]
    assert res[0].text == "queued as X1" and res[0].remote_mta == "127.0.0.1"
    assert sink.received[0]["from"] == "a@cx.example"
    assert sink.received[0]["to"] == ["b@peer.example", "c@peer.example"]
    assert sink.received[0]["data"] == MSG
    assert "BODY=8BITMIME" not in sink.received[0]["options"]


async def test_mixed_rcpt_results(start_sink: StartSink) -> None:
    sink = Sink(rcpt_replies={"bad@peer.example": "550 5.1.1 no such user",
                              "busy@peer.example": "450 4.2.1 mailbox busy"})
    port = await start_sink(sink)
    rcpts = ["bad@peer.example", "good@peer.example", "busy@peer.example"]
    res = await smarthost(port).deliver("a@cx.example", rcpts, MSG)
    assert statuses(res) == [("bad@peer.example", "perm", 550, "5.1.1"),
                             ("good@peer.example", "ok", 250, "2.0.0"),
                             ("busy@peer.example", "temp", 450, "4.2.1")]
    assert res[0].text == "no such user"
    assert res[0].diagnostic == "smtp; 550 5.1.1 no such user"
    assert sink.received[0]["to"] == ["good@peer.example"]


async def test_all_rcpt_rejected_sends_no_data(start_sink: StartSink) -> None:
    sink = Sink(rcpt_replies={"x@peer.example": "451 try later"})
    port = await start_sink(sink)
    res = await smarthost(port).deliver("a@cx.example", ["x@peer.example"], MSG)
    assert statuses(res) == [("x@peer.example", "temp", 451, "4.0.0")]
    assert sink.received == [] and sink.tls == []


async def test_data_554_is_permanent_for_all_accepted(start_sink: StartSink) -> None:
    sink = Sink(data_reply="554 5.7.1 content rejected",
                rcpt_replies={"bad@peer.example": "550 5.1.1 unknown"})
    port = await start_sink(sink)
    res = await smarthost(port).deliver(
        "a@cx.example", ["b@peer.example", "c@peer.example", "bad@peer.example"], MSG)
    assert statuses(res) == [("b@peer.example", "perm", 554, "5.7.1"),
                             ("c@peer.example", "perm", 554, "5.7.1"),
                             ("bad@peer.example", "perm", 550, "5.1.1")]


async def test_data_451_is_temporary(start_sink: StartSink) -> None:
    port = await start_sink(Sink(data_reply="451 4.3.0 disk full"))
    res = await smarthost(port).deliver("a@cx.example", ["b@peer.example"], MSG)
    assert statuses(res) == [("b@peer.example", "temp", 451, "4.3.0")]


async def test_connection_refused_is_temporary() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    res = await smarthost(port).deliver("a@cx.example", ["b@peer.example"], MSG)
    assert statuses(res) == [("b@peer.example", "temp", 451, "4.4.1")]
    assert "smarthost" in res[0].text and str(port) not in res[0].text  # no config leak


async def _banner_server(banner: bytes) -> asyncio.Server:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(banner)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(client, "127.0.0.1", 0)


async def test_421_greeting_is_temporary() -> None:
    server = await _banner_server(b"421 4.3.2 too busy\r\n")
    port = server.sockets[0].getsockname()[1]
    try:
        res = await smarthost(port).deliver("a@cx.example", ["b@peer.example"], MSG)
    finally:
        server.close()
    assert statuses(res) == [("b@peer.example", "temp", 421, "4.3.2")]


async def test_554_greeting_is_permanent() -> None:
    server = await _banner_server(b"554 no service for you\r\n")
    port = server.sockets[0].getsockname()[1]
    try:
        res = await smarthost(port).deliver("a@cx.example", ["b@peer.example"], MSG)
    finally:
        server.close()
    assert statuses(res) == [("b@peer.example", "perm", 554, "5.0.0")]


async def test_silent_peer_times_out_temporary() -> None:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never greets

    server = await asyncio.start_server(client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    rd = RemoteDelivery(RelayConfig(smarthost=f"127.0.0.1:{port}"), "relay.cx.example",
                        timeout=0.3)
    try:
        res = await rd.deliver("a@cx.example", ["b@peer.example"], MSG)
    finally:
        server.close()
    assert res[0].status == "temp" and res[0].enhanced.startswith("4.4.")


async def test_starttls_and_auth_plain(start_sink: StartSink,
                                       tls_files: tuple[Path, Path]) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*map(str, tls_files))
    sink = Sink()

    def authenticator(server: SMTP, session: Any, envelope: Any, mechanism: str,
                      data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        sink.auth.append((data.login, data.password))
        return AuthResult(success=data.password == b"s3cret", handled=False)

    port = await start_sink(sink, tls_context=ctx, authenticator=authenticator,
                            auth_required=True, auth_exclude_mechanism=["LOGIN"])
    rd = smarthost(port, username="relay", password="s3cret", verify_tls=False,
                   require_tls=True)
    res = await rd.deliver("a@cx.example", ["b@peer.example"], MSG)
    assert statuses(res) == [("b@peer.example", "ok", 250, "2.0.0")]
    assert sink.tls == [True] and sink.auth == [(b"relay", b"s3cret")]
    assert sink.received[0]["data"] == MSG

    bad = smarthost(port, username="relay", password="wrong", verify_tls=False)
    res = await bad.deliver("a@cx.example", ["b@peer.example"], MSG)
    assert statuses(res) == [("b@peer.example", "temp", 451, "4.7.8")]
    assert "wrong" not in res[0].text


async def test_verify_tls_rejects_self_signed(start_sink: StartSink,
                                              tls_files: tuple[Path, Path]) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*map(str, tls_files))
    port = await start_sink(Sink(), tls_context=ctx)
    res = await smarthost(port, verify_tls=True).deliver("a@cx.example", ["b@peer.example"], MSG)
    assert res[0].status == "temp" and res[0].enhanced == "4.7.5"


async def test_require_tls_without_starttls_is_temporary(start_sink: StartSink) -> None:
    sink = Sink()
    port = await start_sink(sink)
    res = await smarthost(port, require_tls=True).deliver("a@cx.example", ["b@peer.example"], MSG)
    assert statuses(res) == [("b@peer.example", "temp", 451, "4.7.10")]
    assert sink.received == []


async def test_no_auth_in_clear_text(start_sink: StartSink) -> None:
    sink = Sink()
    port = await start_sink(sink, auth_require_tls=False,
                            authenticator=lambda *a: AuthResult(success=True))
    res = await smarthost(port, username="u", password="p").deliver(
        "a@cx.example", ["b@peer.example"], MSG)
    assert statuses(res) == [("b@peer.example", "temp", 451, "4.7.10")]
    assert sink.received == []


async def test_dot_stuffing_and_bytes_unchanged(start_sink: StartSink) -> None:
    sink = Sink()
    port = await start_sink(sink)
    body = (b".\r\n..\r\n.leading dot\r\n...three\r\n \r\nend with dot.\r\n.\r\n"
            b"tab\there \xe4\xb8\xad\xe6\x96\x87\r\n=?utf-8?q?x?=\r\n.")  # no final CRLF
    raw = MSG.replace(b"Hello.\r\n", body)
    res = await smarthost(port).deliver("a@cx.example", ["b@peer.example"], raw)
    assert res[0].status == "ok"
    assert sink.received[0]["data"] == raw + b"\r\n"  # only the final CRLF is added
    assert "BODY=8BITMIME" in sink.received[0]["options"]


async def test_bare_lf_becomes_crlf(start_sink: StartSink) -> None:
    sink = Sink()
    port = await start_sink(sink)
    raw = MSG.replace(b"\r\n", b"\n")
    res = await smarthost(port).deliver("a@cx.example", ["b@peer.example"], raw)
    assert res[0].status == "ok" and sink.received[0]["data"] == MSG


async def test_8bit_without_8bitmime_is_permanent(start_sink: StartSink) -> None:
    sink = Sink(strip_ehlo=("8BITMIME",))
    port = await start_sink(sink)
    raw = MSG.replace(b"Hello.", "你好".encode())
    res = await smarthost(port).deliver("a@cx.example", ["b@peer.example"], raw)
    assert statuses(res) == [("b@peer.example", "perm", 554, "5.6.3")]
    ok = await smarthost(port).deliver("a@cx.example", ["b@peer.example"], MSG)
    assert ok[0].status == "ok"


async def test_smtputf8(start_sink: StartSink) -> None:
    sink = Sink()
    port = await start_sink(sink, enable_SMTPUTF8=True)
    res = await smarthost(port).deliver("a@cx.example", ["张三@peer.example"], MSG)
    assert res[0].status == "ok"
    assert sink.received[0]["to"] == ["张三@peer.example"]
    assert "SMTPUTF8" in sink.received[0]["options"]

    legacy = Sink()
    port = await start_sink(legacy)
    res = await smarthost(port).deliver("a@cx.example", ["张三@peer.example", "b@peer.example"],
                                        MSG)
    assert statuses(res) == [("张三@peer.example", "perm", 553, "5.6.7"),
                             ("b@peer.example", "ok", 250, "2.0.0")]
    res = await smarthost(port).deliver("张三@cx.example", ["b@peer.example"], MSG)
    assert statuses(res) == [("b@peer.example", "perm", 553, "5.6.7")]


async def test_size_limit_is_permanent(start_sink: StartSink) -> None:
    sink = Sink()
    port = await start_sink(sink, data_size_limit=50)
    res = await smarthost(port).deliver("a@cx.example", ["b@peer.example"], MSG)
    assert statuses(res) == [("b@peer.example", "perm", 552, "5.3.4")]


async def test_null_sender(start_sink: StartSink) -> None:
    sink = Sink()
    port = await start_sink(sink)
    res = await smarthost(port).deliver("", ["b@peer.example"], MSG)
    assert res[0].status == "ok" and sink.received[0]["from"] == "<>"


# --- MX mode -------------------------------------------------------------------------

class FakeDns:
    """An MXQuery: domain -> records or an exception; counts queries."""

    def __init__(self, answers: dict[str, list[MXRecord] | Exception]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def __call__(self, domain: str) -> list[MXRecord]:
        self.calls.append(domain)
        await asyncio.sleep(0)
        answer = self.answers[domain]
        if isinstance(answer, Exception):
            raise answer
        return answer


def by_mx(port: int, answers: dict[str, list[MXRecord] | Exception]) -> RemoteDelivery:
    return RemoteDelivery(RelayConfig(), "relay.cx.example", MXResolver(FakeDns(answers)),
                          timeout=5, mx_port=port)


async def test_mx_preference_order_and_fallback(start_sink: StartSink) -> None:
    sink = Sink()
    port = await start_sink(sink)
    # 127.0.0.2 has no listener (refused); 127.0.0.1 is the sink; 127.0.0.3 is never tried.
    rd = by_mx(port, {"peer.example": [MXRecord(20, "127.0.0.1"), MXRecord(10, "127.0.0.2"),
                                       MXRecord(30, "127.0.0.3")]})
    res = await rd.deliver("a@cx.example", ["b@peer.example"], MSG)
    assert statuses(res) == [("b@peer.example", "ok", 250, "2.0.0")]
    assert res[0].remote_mta == "127.0.0.1" and sink.received[0]["data"] == MSG


async def test_mx_all_hosts_down_is_temporary() -> None:
    rd = by_mx(1, {"peer.example": [MXRecord(10, "127.0.0.2"), MXRecord(20, "127.0.0.3")]})
    res = await rd.deliver("a@cx.example", ["b@peer.example"], MSG)
    assert res[0].status == "temp" and res[0].enhanced == "4.4.1"


async def test_mx_no_records_falls_back_to_address(start_sink: StartSink) -> None:
    port = await start_sink(Sink())
    rd = by_mx(port, {"127.0.0.1": NoRecords("127.0.0.1")})  # RFC 5321 §5.1 implicit MX
    res = await rd.deliver("a@cx.example", ["b@127.0.0.1"], MSG)
    assert res[0].status == "ok"


@pytest.mark.parametrize("answer,status,code,enhanced", [
    (NoSuchDomain("x"), "perm", 550, "5.1.2"),
    ([MXRecord(0, "")], "perm", 556, "5.1.10"),
    ([MXRecord(0, ".")], "perm", 556, "5.1.10"),
    (DnsTemporary("SERVFAIL"), "temp", 451, "4.4.3"),
    (TimeoutError(), "temp", 451, "4.4.3"),
])
async def test_mx_dns_failures(answer: Any, status: str, code: int, enhanced: str) -> None:
    rd = by_mx(1, {"peer.example": answer})
    res = await rd.deliver("a@cx.example", ["b@peer.example", "c@peer.example"], MSG)
    assert statuses(res) == [("b@peer.example", status, code, enhanced),
                             ("c@peer.example", status, code, enhanced)]


async def test_mx_cache_ttl_and_single_flight() -> None:
    now = [1000.0]
    dns = FakeDns({"peer.example": [MXRecord(10, "B.peer.example.", 120),
                                    MXRecord(5, "a.peer.example", 300)],
                   "gone.example": NoSuchDomain("gone.example"),
                   "flaky.example": DnsTemporary("timeout")})
    r = MXResolver(dns, clock=lambda: now[0])
    results = await asyncio.gather(*(r.lookup("Peer.Example.") for _ in range(5)))
    assert all(x == [(5, "a.peer.example"), (10, "b.peer.example")] for x in results)
    assert dns.calls == ["peer.example"]  # one query for five concurrent callers
    now[0] += 119
    await r.lookup("peer.example")
    assert len(dns.calls) == 1
    now[0] += 2  # past the smallest TTL
    await r.lookup("peer.example")
    assert len(dns.calls) == 2
    for _ in range(2):
        with pytest.raises(DnsFailure) as exc:
            await r.lookup("gone.example")
        assert exc.value.smtp_enhanced == "5.1.2" and not exc.value.temporary
    assert dns.calls.count("gone.example") == 1  # permanent failures are cached briefly
    for _ in range(2):
        with pytest.raises(DnsFailure) as exc:
            await r.lookup("flaky.example")
        assert exc.value.temporary
    assert dns.calls.count("flaky.example") == 2  # temporary failures are not cached


async def test_rcpt_421_defers_the_rest(start_sink: StartSink) -> None:
    sink = Sink(rcpt_replies={"b@peer.example": "421 4.7.0 closing, too many errors"})
    port = await start_sink(sink)
    res = await smarthost(port).deliver(
        "a@cx.example", ["ok@peer.example", "b@peer.example", "c@peer.example"], MSG)
    # The first was accepted but DATA never happened: it is deferred too, never "ok".
    assert [(r.status, r.code, r.enhanced) for r in res] == [("temp", 421, "4.7.0")] * 3
    assert sink.received == []


async def test_auth_without_reply_times_out_temporary(start_sink: StartSink,
                                                      tls_files: tuple[Path, Path]) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*map(str, tls_files))
    port = await start_sink(Sink(), tls_context=ctx,
                            authenticator=lambda *a: AuthResult(success=False, handled=True))
    rd = RemoteDelivery(RelayConfig(smarthost=f"127.0.0.1:{port}", username="u", password="p",
                                    verify_tls=False), "relay.cx.example", timeout=0.3)
    res = await rd.deliver("a@cx.example", ["b@peer.example"], MSG)
    assert (res[0].status, res[0].enhanced) == ("temp", "4.4.2")


async def test_connection_lost_after_data_is_temporary(start_sink: StartSink) -> None:
    port = await start_sink(Sink(drop_at_data=True,
                                 rcpt_replies={"bad@peer.example": "550 5.1.1 unknown"}))
    res = await smarthost(port).deliver("a@cx.example", ["b@peer.example", "bad@peer.example"],
                                        MSG)
    assert statuses(res) == [("b@peer.example", "temp", 451, "4.4.2"),
                             ("bad@peer.example", "perm", 550, "5.1.1")]


async def test_dkim_signed_message_still_verifies_after_delivery(start_sink: StartSink) -> None:
    from mailrelay.dkim import DkimSigner, generate_key, record_value, verify

    pem, record = generate_key("s1", "cx.example", bits=1024)
    raw = MSG.replace(b"Hello.\r\n", b".\r\n..x\r\nline with trailing space \r\n\xe4\xb8\xad\r\n")
    signed = await DkimSigner("cx.example", "s1", pem).sign_async(raw)
    sink = Sink()
    port = await start_sink(sink)
    res = await smarthost(port).deliver("a@cx.example", ["b@peer.example"], signed)
    assert res[0].status == "ok"
    assert sink.received[0]["data"] == signed
    assert verify(sink.received[0]["data"], {"s1._domainkey.cx.example": record_value(record)}.get)


async def test_bad_address_syntax_is_permanent(start_sink: StartSink) -> None:
    sink = Sink()
    port = await start_sink(sink)
    res = await smarthost(port).deliver(
        "a@cx.example", ["bad rcpt@peer.example", "b@peer.example", "x\r\nRSET@peer.example",
                         "<c@peer.example>", '"john doe"@peer.example'], MSG)
    assert statuses(res) == [("bad rcpt@peer.example", "perm", 553, "5.1.3"),
                             ("b@peer.example", "ok", 250, "2.0.0"),
                             ("x\r\nRSET@peer.example", "perm", 553, "5.1.3"),
                             ("<c@peer.example>", "perm", 553, "5.1.3"),
                             ('"john doe"@peer.example', "ok", 250, "2.0.0")]
    assert sink.received[0]["to"] == ["b@peer.example", '"john doe"@peer.example']
    res = await smarthost(port).deliver("a b@cx.example", ["b@peer.example"], MSG)
    assert statuses(res) == [("b@peer.example", "perm", 553, "5.1.7")]
