"""The c2s session core, driven over a fake link or with raw bytes (no sockets)."""

from __future__ import annotations

import base64
import itertools
from xml.etree.ElementTree import Element, SubElement

import pytest

from directory.scram import derive_keys
from xmpp.jid import JID
from xmpp.proto import ns
from xmpp.proto.config import FeaturesConfig, SessionConfig
from xmpp.proto.events import (
    Authenticated,
    AuthFailed,
    AuthRequested,
    BindRequested,
    NonzaReceived,
    PlainCredentials,
    SessionBound,
    StanzaFromClient,
    StanzaReceived,
    StanzaToClient,
    StartTLSRequested,
    StreamEnded,
    StreamOpened,
)
from xmpp.proto.parser import StreamParser
from xmpp.proto.serializer import to_bytes
from xmpp.proto.session import ServerSession
from xmpp.proto.state import InvalidTransition, SessionState, StateMachine, Trigger

from .link import DOMAIN, HEADER, events_of, make_link

S = SessionState
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
MECHS = ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def plain_auth(user: str = "juliet", password: str = "r0m30!", authzid: str = "") -> bytes:
    msg = b64(f"{authzid}\0{user}\0{password}".encode())
    return f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>{msg}</auth>".encode()


BIND = (b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        b"<resource>balcony</resource></bind></iq>")


class Probe:
    """Raw bytes in, parsed server output out; a hand-driven fake driver."""

    def __init__(self, **config: object) -> None:
        config.setdefault("direct_tls", True)
        config.setdefault("domains", (DOMAIN,))
        ids = itertools.count(1)
        self.server = ServerSession(SessionConfig(**config),  # type: ignore[arg-type]
                                    new_id=lambda: f"id{next(ids)}")
        self.out = StreamParser(max_stanza_bytes=1 << 20)
        self.events: list = []

    def send(self, data: bytes) -> list:
        self.server.receive_data(data)
        return self.collect()

    def collect(self) -> list:
        while (ev := self.server.next_event()) is not None:
            self.events.append(ev)
        return self.out.feed(self.server.data_to_send())

    def restart(self) -> None:
        self.out.reset()

    def elements(self, data: bytes) -> list[Element]:
        return [e.element for e in self.send(data) if isinstance(e, StanzaReceived)]

    def login(self, resource: bytes = BIND) -> None:
        self.send(HEADER)
        self.send(plain_auth())
        self.server.auth_result(True)
        self.collect()
        self.restart()
        self.send(HEADER)
        self.send(resource)
        ev = self.events[-1]
        assert isinstance(ev, BindRequested)
        self.server.bound(JID("juliet", DOMAIN, ev.resource))
        self.collect()

    def ended(self) -> StreamEnded:
        ends = events_of(self.events, StreamEnded)
        assert len(ends) == 1, self.events
        assert self.server.state is S.CLOSED
        return ends[0]


def condition(el: Element) -> str:
    return el[0].tag.partition("}")[2]


def stream_error_of(output: list) -> str:
    errs = [e.element for e in output
            if isinstance(e, StanzaReceived) and e.element.tag == ns.STREAM_ERROR]
    assert errs, output
    return condition(errs[0])


# --- full logins over the fake link ----------------------------------------------------------


@pytest.mark.parametrize("mechanism", MECHS)
@pytest.mark.parametrize("chunk", [0, 1, 7])
def test_login_bind_and_message(mechanism: str, chunk: int) -> None:
    link = make_link(mechanisms=(mechanism,))
    link.chunk = chunk
    link.pump()
    assert link.server.state is S.BOUND and link.server.secured
    assert link.client.bound_jid == JID("juliet", DOMAIN, "balcony")
    kinds = [type(e) for e in link.server_events]
    # PLAIN: one password check; SCRAM: the keys, then the proof check (lockout first)
    asks = [PlainCredentials] if mechanism == "PLAIN" else [AuthRequested, AuthRequested]
    assert kinds == [StartTLSRequested, *asks, Authenticated, BindRequested, SessionBound]
    assert link.server_events[1 + len(asks)] == Authenticated("juliet", mechanism)

    msg = Element(ns.MESSAGE, {"to": "Romeo@Example.NET", "type": "chat", "id": "m1"})
    SubElement(msg, ns.q(ns.CLIENT, "body")).text = "Wherefore art thou?"
    link.client.send_stanza(msg)
    link.pump()
    got = link.server_events[-1]
    assert isinstance(got, StanzaFromClient)
    assert got.element.get("from") == "juliet@example.com/balcony"
    assert got.element.get("to") == "romeo@example.net"

    reply = Element(ns.MESSAGE, {"from": "romeo@example.net/orchard", "type": "chat"})
    SubElement(reply, ns.q(ns.CLIENT, "body")).text = "Here & there"
    assert link.server.send_stanza(reply)
    link.pump()
    delivered = events_of(link.client_events, StanzaToClient)
    assert delivered[-1].element.findtext(ns.q(ns.CLIENT, "body")) == "Here & there"


@pytest.mark.parametrize("mechanism", MECHS)
def test_wrong_password(mechanism: str) -> None:
    link = make_link(password="wrong", mechanisms=(mechanism,))
    link.pump()
    failed = events_of(link.server_events, AuthFailed)
    assert failed == [AuthFailed(mechanism, "juliet", "not-authorized")]
    assert events_of(link.client_events, AuthFailed)[0].condition == "not-authorized"
    assert not events_of(link.server_events, Authenticated)
    assert link.server.state is S.CLOSED  # the client gave up and closed


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_unknown_user_fails_like_a_wrong_password(mechanism: str) -> None:
    link = make_link(user="nobody", mechanisms=(mechanism,))
    link.pump()
    assert events_of(link.server_events, AuthRequested)[0].username == "nobody"
    assert events_of(link.server_events, AuthFailed)[0].condition == "not-authorized"


def test_direct_tls_role_offers_sasl_at_once() -> None:
    link = make_link(direct_tls=True, mechanisms=("PLAIN",))
    link.pump()
    assert link.server.state is S.BOUND
    assert not events_of(link.server_events, StartTLSRequested)


def test_bind_without_resource_gets_a_generated_one() -> None:
    link = make_link(resource="")
    link.pump()
    req = events_of(link.server_events, BindRequested)[0]
    assert req.generated and len(req.resource) >= 8
    assert link.client.bound_jid == JID("juliet", DOMAIN, req.resource)


def test_bind_conflict_refused_by_policy() -> None:
    link = make_link(resource="balcony")
    link.directory.taken.add("balcony")
    link.pump()
    assert link.server.state is S.AUTHENTICATED
    assert link.client_events[-1].error.condition == "conflict"  # type: ignore[union-attr]


def test_async_answers_and_held_input() -> None:
    """Driver answers arrive later; input that came meanwhile waits its turn."""
    link = make_link(mechanisms=("PLAIN",), auto=False)
    link.pump()
    assert isinstance(link.pending[-1], PlainCredentials)
    assert link.server.state is S.SASL
    link.server.receive_data(b" ")  # held, not parsed yet
    link.answer(link.pending.pop())
    link.pump()
    assert isinstance(link.pending[-1], BindRequested)
    link.answer(link.pending.pop())
    link.pump()
    assert link.server.state is S.BOUND


def test_late_answers_after_close_are_ignored() -> None:
    probe = Probe()
    probe.send(HEADER)
    probe.send(plain_auth())
    probe.send(b"")  # the client went away while the directory was busy
    probe.server.auth_result(True)
    probe.server.provide_scram_keys(None)
    probe.server.bound(JID("juliet", DOMAIN, "x"))
    assert probe.ended().by_peer


def test_driver_answers_in_the_wrong_state_are_refused() -> None:
    probe = Probe()
    with pytest.raises(RuntimeError):
        probe.server.tls_started()
    with pytest.raises(RuntimeError):
        probe.server.auth_result(True)
    with pytest.raises(RuntimeError):
        probe.server.bound(JID("juliet", DOMAIN, "x"))


# --- STARTTLS ----------------------------------------------------------------------------------


def test_features_before_tls_offer_only_required_starttls() -> None:
    probe = Probe(direct_tls=False)
    out = probe.send(HEADER)
    assert isinstance(out[0], StreamOpened) and out[0].from_ == DOMAIN
    features = out[1].element
    assert [c.tag for c in features] == [ns.STARTTLS]
    assert features[0].find(ns.q(ns.TLS, "required")) is not None


def test_plain_refused_before_tls() -> None:
    probe = Probe(direct_tls=False)
    probe.send(HEADER)
    failure = probe.elements(plain_auth())[0]
    assert failure.tag == ns.SASL_FAILURE and condition(failure) == "encryption-required"
    assert probe.server.state is S.CONNECTED
    assert not events_of(probe.events, PlainCredentials)


def test_optional_tls_offers_scram_but_never_plain_in_clear() -> None:
    probe = Probe(direct_tls=False, tls_required=False)
    features = probe.send(HEADER)[1].element
    mechs = [m.text for m in features.iter(ns.q(ns.SASL, "mechanism"))]
    assert mechs == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    assert features.find(ns.STARTTLS).find(ns.q(ns.TLS, "required")) is None  # type: ignore[union-attr]
    assert condition(probe.elements(plain_auth())[0]) == "encryption-required"


def test_scram_without_tls_when_tls_optional() -> None:
    link = make_link(config=SessionConfig(domains=(DOMAIN,), tls_available=False,
                                          tls_required=False), require_tls=False)
    link.pump()
    assert link.server.state is S.BOUND and not link.server.secured


def test_plaintext_after_starttls_is_discarded() -> None:
    """RFC 6120 §5.4.3.3: nothing sent before the TLS handshake survives it."""
    probe = Probe(direct_tls=False)
    probe.send(HEADER)
    out = probe.elements(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
                         + plain_auth() + b"<message/>")
    assert [e.tag for e in out] == [ns.PROCEED]
    probe.send(b"<presence/>")  # still plaintext: dropped
    assert probe.server.state is S.TLS_NEGOTIATING
    probe.server.tls_started()
    probe.restart()
    out = probe.send(HEADER)
    assert isinstance(out[0], StreamOpened)
    assert [m.text for m in out[1].element.iter(ns.q(ns.SASL, "mechanism"))] == MECHS
    assert not events_of(probe.events, PlainCredentials)


def test_starttls_when_already_secured_fails_and_closes() -> None:
    probe = Probe()
    probe.send(HEADER)
    out = probe.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert out[0].element.tag == ns.TLS_FAILURE
    assert probe.ended().error is None


# --- SASL errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("auth", "expected"), [
    (f"<auth xmlns='{SASL_NS}' mechanism='DIGEST-MD5'/>".encode(), "invalid-mechanism"),
    (f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>!!notbase64</auth>".encode(),
     "incorrect-encoding"),
    (f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>{b64(b'only-one-part')}</auth>".encode(),
     "malformed-request"),
    (f"<auth xmlns='{SASL_NS}' mechanism='SCRAM-SHA-256'>{b64(b'garbage')}</auth>".encode(),
     "malformed-request"),
    (f"<auth xmlns='{SASL_NS}' mechanism='SCRAM-SHA-256'>{b64(b'p=tls-unique,,n=a,r=x')}"
     "</auth>".encode(), "malformed-request"),
    (plain_auth(authzid="romeo@example.com"), "invalid-authzid"),
    (plain_auth(user="bad user"), "not-authorized"),
    (plain_auth(user="juliet@other.example"), "not-authorized"),
    (f"<response xmlns='{SASL_NS}'>abc</response>".encode(), "malformed-request"),
    (f"<abort xmlns='{SASL_NS}'/>".encode(), "aborted"),
])
def test_sasl_failures(auth: bytes, expected: str) -> None:
    probe = Probe()
    probe.send(HEADER)
    failure = probe.elements(auth)[0]
    assert failure.tag == ns.SASL_FAILURE and condition(failure) == expected
    assert probe.server.state is S.SECURED  # the client may retry (RFC 6120 §6.4.5)
    assert events_of(probe.events, AuthFailed)[0].condition == expected


def test_authzid_of_own_account_is_accepted() -> None:
    probe = Probe()
    probe.send(HEADER)
    probe.send(plain_auth(authzid="juliet@example.com"))
    assert events_of(probe.events, PlainCredentials)[0].authzid == "juliet@example.com"


def test_abort_during_scram() -> None:
    probe = Probe()
    probe.send(HEADER)
    first = b64(b"n,,n=juliet,r=abcdef")
    probe.send(f"<auth xmlns='{SASL_NS}' mechanism='SCRAM-SHA-1'>{first}</auth>".encode())
    assert probe.server.state is S.SASL
    probe.server.provide_scram_keys(derive_keys("SCRAM-SHA-1", "pw", b"s" * 16, 64))
    assert probe.collect()[0].element.tag == ns.SASL_CHALLENGE
    failure = probe.elements(f"<abort xmlns='{SASL_NS}'/>".encode())[0]
    assert condition(failure) == "aborted"
    assert probe.server.state is S.SECURED


def test_scram_without_initial_response_gets_empty_challenge() -> None:
    probe = Probe()
    probe.send(HEADER)
    out = probe.elements(f"<auth xmlns='{SASL_NS}' mechanism='SCRAM-SHA-256'/>".encode())
    assert out[0].tag == ns.SASL_CHALLENGE and not out[0].text
    first = b64(b"n,,n=juliet,r=abcdef")
    probe.send(f"<response xmlns='{SASL_NS}'>{first}</response>".encode())
    assert events_of(probe.events, AuthRequested) == [
        AuthRequested("SCRAM-SHA-256", "juliet", "")]


def test_temporary_auth_failure_from_the_driver() -> None:
    probe = Probe()
    probe.send(HEADER)
    first = b64(b"n,,n=juliet,r=abcdef")
    probe.send(f"<auth xmlns='{SASL_NS}' mechanism='SCRAM-SHA-256'>{first}</auth>".encode())
    probe.server.auth_result(False, "temporary-auth-failure")
    assert condition(probe.collect()[0].element) == "temporary-auth-failure"


def test_too_many_failures_close_the_stream() -> None:
    probe = Probe(max_auth_failures=3)
    probe.send(HEADER)
    for _ in range(2):
        probe.send(plain_auth(password="x"))
        probe.server.auth_result(False)
        probe.collect()
    probe.send(plain_auth(password="x"))
    probe.server.auth_result(False)
    assert stream_error_of(probe.collect()) == "policy-violation"
    assert probe.ended().error.condition == "policy-violation"  # type: ignore[union-attr]


def test_pipelined_restart_after_sasl_success() -> None:
    """Bytes after the completing element belong to the restarted stream (§6.4.6)."""
    probe = Probe()
    probe.send(HEADER)
    probe.send(plain_auth() + HEADER + BIND)
    probe.server.auth_result(True)
    out = probe.collect()
    assert out[0].element.tag == ns.SASL_SUCCESS
    assert probe.server.state is S.AUTHENTICATED
    assert events_of(probe.events, BindRequested) == [BindRequested("balcony")]
    probe.restart()


# --- stream header checks ----------------------------------------------------------------------


@pytest.mark.parametrize(("header", "expected"), [
    (HEADER.replace(b"example.com", b"other.example"), "host-unknown"),
    (HEADER.replace(b" to='example.com'", b""), "host-unknown"),
    (HEADER.replace(b"version='1.0'", b"version='0.9'"), "unsupported-version"),
    (HEADER.replace(b" version='1.0'>", b">"), "unsupported-version"),
    (HEADER.replace(b"jabber:client", b"jabber:server"), "invalid-namespace"),
    (b"<?xml version='1.0'?><!DOCTYPE x>", "restricted-xml"),
])
def test_stream_header_errors(header: bytes, expected: str) -> None:
    probe = Probe()
    out = probe.send(header)
    # RFC 6120 §4.9.1.2: a stream header comes first, even when the error is immediate.
    assert isinstance(out[0], StreamOpened) and out[0].from_ == DOMAIN
    assert stream_error_of(out) == expected
    assert probe.ended().error.condition == expected  # type: ignore[union-attr]


def test_domain_must_not_change_on_restart() -> None:
    probe = Probe(domains=(DOMAIN, "other.example"))
    probe.send(HEADER)
    probe.send(plain_auth())
    probe.server.auth_result(True)
    probe.collect()
    probe.restart()
    out = probe.send(HEADER.replace(b"example.com", b"other.example"))
    assert stream_error_of(out) == "not-authorized"


def test_stream_header_answers_client_from() -> None:
    probe = Probe()
    out = probe.send(HEADER.replace(b"to=", b"from='Juliet@Example.com' to="))
    assert out[0].to == "juliet@example.com"
    assert out[0].id and out[0].version == "1.0"


# --- before authentication / before bind -------------------------------------------------------


@pytest.mark.parametrize("stanza", [b"<message to='romeo@example.net'/>", b"<presence/>",
                                    b"<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>",
                                    b"<enable xmlns='urn:xmpp:sm:3'/>"])
def test_stanza_before_auth_is_not_authorized(stanza: bytes) -> None:
    probe = Probe(direct_tls=False)
    probe.send(HEADER)
    assert stream_error_of(probe.send(stanza)) == "not-authorized"
    assert probe.ended().error.condition == "not-authorized"  # type: ignore[union-attr]
    assert not events_of(probe.events, StanzaFromClient)


def test_stanza_before_bind_is_not_authorized() -> None:
    probe = Probe()
    probe.send(HEADER)
    probe.send(plain_auth())
    probe.server.auth_result(True)
    probe.collect()
    probe.restart()
    features = probe.send(HEADER)[1].element
    assert [c.tag for c in features] == [ns.BIND_TAG, ns.SESSION_TAG]
    assert stream_error_of(probe.send(b"<message to='romeo@example.net'/>")) == "not-authorized"


def test_stanza_size_limit_is_smaller_before_auth() -> None:
    probe = Probe(max_stanza_bytes_unauthenticated=1000, max_stanza_bytes=100_000)
    probe.send(HEADER)
    big = b"<message><body>" + b"x" * 5000 + b"</body></message>"
    assert stream_error_of(probe.send(big)) == "policy-violation"
    probe = Probe(max_stanza_bytes_unauthenticated=1000, max_stanza_bytes=100_000)
    probe.login()
    probe.send(big)
    assert isinstance(probe.events[-1], StanzaFromClient)


# --- bound: stanza validation -----------------------------------------------------------------


def bound_probe(**config: object) -> Probe:
    probe = Probe(**config)
    probe.login()
    assert probe.server.state is S.BOUND
    return probe


def test_bind_result_carries_full_jid() -> None:
    probe = Probe()
    probe.send(HEADER)
    probe.send(plain_auth())
    probe.server.auth_result(True)
    probe.collect()
    probe.restart()
    probe.send(HEADER)
    probe.send(BIND)
    probe.server.bound(JID("juliet", DOMAIN, "balcony"))
    result = probe.collect()[0].element
    assert result.get("type") == "result" and result.get("id") == "b1"
    assert result.findtext(f"{ns.BIND_TAG}/{ns.q(ns.BIND, 'jid')}") == \
        "juliet@example.com/balcony"


def test_bind_with_invalid_resource_is_bad_request() -> None:
    probe = Probe()
    probe.send(HEADER)
    probe.send(plain_auth())
    probe.server.auth_result(True)
    probe.collect()
    probe.restart()
    probe.send(HEADER)
    out = probe.elements(BIND.replace(b"balcony", "bal\u200bcony".encode()))
    assert out[0].get("type") == "error"
    assert condition(out[0].find(ns.ERROR)) == "bad-request"  # type: ignore[arg-type]
    assert probe.server.state is S.AUTHENTICATED


def test_bound_refuses_a_jid_of_another_account() -> None:
    probe = Probe()
    probe.send(HEADER)
    probe.send(plain_auth())
    probe.server.auth_result(True)
    probe.collect()
    probe.restart()
    probe.send(HEADER)
    probe.send(BIND)
    with pytest.raises(ValueError):
        probe.server.bound(JID("romeo", DOMAIN, "x"))


@pytest.mark.parametrize("sender", [None, "juliet@example.com", "juliet@example.com/balcony",
                                    "JULIET@example.com/balcony"])
def test_from_is_stamped(sender: str | None) -> None:
    probe = bound_probe()
    msg = Element(ns.MESSAGE, {"to": "romeo@example.net"})
    if sender:
        msg.set("from", sender)
    probe.send(to_bytes(msg))
    ev = probe.events[-1]
    assert isinstance(ev, StanzaFromClient)
    assert ev.element.get("from") == "juliet@example.com/balcony"


@pytest.mark.parametrize("sender", ["romeo@example.net", "juliet@example.com/other",
                                    "example.com", "not a jid@@"])
def test_spoofed_from_is_invalid_from(sender: str) -> None:
    probe = bound_probe()
    out = probe.send(f"<message from='{sender}' to='romeo@example.net'/>".encode())
    assert stream_error_of(out) == "invalid-from"
    assert not events_of(probe.events, StanzaFromClient)


def test_malformed_to_gets_jid_malformed_from_the_server() -> None:
    probe = bound_probe()
    out = probe.elements(b"<message id='x' to='bad jid@example.net'><body>x</body></message>")
    assert out[0].get("type") == "error" and out[0].get("from") == DOMAIN
    assert out[0].get("to") == "juliet@example.com/balcony"
    assert condition(out[0].find(ns.ERROR)) == "jid-malformed"  # type: ignore[arg-type]
    # never answer an error with an error
    assert probe.elements(b"<message type='error' to='bad jid@x'/>") == []
    assert not events_of(probe.events, StanzaFromClient)


@pytest.mark.parametrize("stanza", [
    b"<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>",
    b"<iq type='fetch' id='1'><ping xmlns='urn:xmpp:ping'/></iq>",
    b"<iq type='get' id='1'/>",
    b"<iq type='set' id='1'><a xmlns='urn:a'/><b xmlns='urn:b'/></iq>",
    b"<presence type='online'/>",
])
def test_invalid_stanzas_get_bad_request(stanza: bytes) -> None:
    probe = bound_probe()
    out = probe.elements(stanza)
    assert condition(out[0].find(ns.ERROR)) == "bad-request"  # type: ignore[arg-type]
    assert probe.server.state is S.BOUND


def test_legacy_session_iq_is_answered_by_the_core() -> None:
    probe = bound_probe()
    out = probe.elements(b"<iq type='set' id='s1'><session "
                         b"xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
    assert out[0].get("type") == "result" and out[0].get("id") == "s1"
    assert not events_of(probe.events, StanzaFromClient)


def test_second_bind_is_not_allowed() -> None:
    probe = bound_probe()
    out = probe.elements(BIND)
    assert condition(out[0].find(ns.ERROR)) == "not-allowed"  # type: ignore[arg-type]


def test_keepalives_and_valid_stanzas_flow() -> None:
    probe = bound_probe()
    probe.send(b" \n ")
    probe.send(b"<presence/><iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>"
               b"<message type='weird'/>")
    got = events_of(probe.events, StanzaFromClient)
    assert [e.element.tag for e in got] == [ns.PRESENCE, ns.IQ, ns.MESSAGE]


def test_unknown_top_level_element_is_unsupported_stanza_type() -> None:
    probe = bound_probe()
    assert stream_error_of(probe.send(b"<r xmlns='urn:xmpp:sm:3'/>")) == \
        "unsupported-stanza-type"


def test_configured_features_and_nonzas() -> None:
    feats = FeaturesConfig(sm=True, csi=True, roster_ver=True)
    probe = Probe(features=feats)
    probe.send(HEADER)
    probe.send(plain_auth())
    probe.server.auth_result(True)
    probe.collect()
    probe.restart()
    features = probe.send(HEADER)[1].element
    assert [c.tag for c in features] == [
        ns.BIND_TAG, ns.SESSION_TAG, ns.q(ns.SM, "sm"), ns.q(ns.CSI, "csi"),
        ns.q(ns.ROSTER_VER, "ver")]
    probe.send(b"<resume xmlns='urn:xmpp:sm:3' previd='x' h='0'/>")
    assert isinstance(probe.events[-1], NonzaReceived)
    probe.send(BIND)
    probe.server.bound(JID("juliet", DOMAIN, "balcony"))
    probe.send(b"<inactive xmlns='urn:xmpp:csi:0'/>")
    assert isinstance(probe.events[-1], NonzaReceived)
    assert probe.server.send_nonza(Element(ns.q(ns.SM, "r")))
    assert probe.collect()[-1].element.tag == ns.q(ns.SM, "r")


def test_stanzas_sent_while_bind_pending_wait_for_it() -> None:
    probe = Probe()
    probe.send(HEADER)
    probe.send(plain_auth())
    probe.server.auth_result(True)
    probe.collect()
    probe.restart()
    probe.send(HEADER)
    probe.send(BIND + b"<presence/>")
    probe.send(b"<message to='romeo@example.net'/>")
    assert not events_of(probe.events, StanzaFromClient)
    probe.server.bound(JID("juliet", DOMAIN, "balcony"))
    probe.collect()
    got = events_of(probe.events, StanzaFromClient)
    assert [e.element.tag for e in got] == [ns.PRESENCE, ns.MESSAGE]


# --- closing ----------------------------------------------------------------------------------------


def test_client_closes_stream() -> None:
    probe = bound_probe()
    probe.server.receive_data(b"</stream:stream>")
    probe.collect()
    assert probe.ended() == StreamEnded(None, by_peer=True)


def test_transport_eof() -> None:
    probe = bound_probe()
    probe.send(b"")
    assert probe.ended() == StreamEnded(None, by_peer=True)
    probe.send(b"<presence/>")  # ignored after close
    assert not probe.server.send_stanza(Element(ns.MESSAGE))


def test_server_closes_with_error() -> None:
    from xmpp.proto.errors import StreamError
    probe = bound_probe()
    probe.server.close(StreamError("system-shutdown"))
    out = probe.collect()
    assert stream_error_of(out) == "system-shutdown"
    assert probe.ended().error == StreamError("system-shutdown")


def test_peer_stream_error() -> None:
    probe = bound_probe()
    probe.send(b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
               b"</stream:error>")
    end = probe.ended()
    assert end.by_peer and end.error is not None and end.error.condition == "conflict"


# --- state machine ----------------------------------------------------------------------------------


def test_transition_table() -> None:
    m = StateMachine()
    assert m.fire(Trigger.STARTTLS) is S.TLS_NEGOTIATING
    assert m.fire(Trigger.TLS_STARTED) is S.SECURED
    assert m.fire(Trigger.SASL_START) is S.SASL
    assert m.fire(Trigger.SASL_FAILURE) is S.SECURED
    m.fire(Trigger.SASL_START)
    assert m.fire(Trigger.SASL_SUCCESS) is S.AUTHENTICATED
    assert not m.can(Trigger.STARTTLS)
    with pytest.raises(InvalidTransition):
        m.fire(Trigger.STARTTLS)
    assert m.fire(Trigger.BIND_SUCCESS) is S.BOUND
    assert m.fire(Trigger.CLOSE) is S.CLOSED


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        SessionConfig(domains=())
    with pytest.raises(ValueError):
        SessionConfig(domains=(DOMAIN,), mechanisms=("CRAM-MD5",))
    with pytest.raises(ValueError):
        SessionConfig(domains=(DOMAIN,), tls_available=False)
    assert SessionConfig(domains=("Example.COM.",)).domains == ("example.com",)


# --- SCRAM-PLUS (the directory's SASL module with tls-server-end-point) ------------------------


def test_scram_plus_offered_with_binding_and_bound_to_it() -> None:
    from directory.sasl import ChannelBinding
    from directory.scram import client_proof

    cb = ChannelBinding("tls-server-end-point", b"\x07" * 32)
    probe = Probe(binding=cb)
    feats = b"".join(to_bytes(e.element) for e in probe.send(HEADER)
                     if isinstance(e, StanzaReceived))
    assert b"SCRAM-SHA-256-PLUS" in feats and b"tls-server-end-point" in feats  # XEP-0440
    keys = derive_keys("SCRAM-SHA-256", "r0m30!", b"s" * 16, 64)
    gs2 = "p=tls-server-end-point,,"
    bare = "n=juliet,r=cn"
    probe.send(f"<auth xmlns='{SASL_NS}' mechanism='SCRAM-SHA-256-PLUS'>"
               f"{b64((gs2 + bare).encode())}</auth>".encode())
    probe.server.provide_scram_keys(keys)
    challenge = probe.collect()[0].element
    server_first = base64.b64decode(challenge.text or "").decode()
    without = f"c={b64(gs2.encode() + cb.data)},r={server_first.split(',')[0][2:]}"
    proof, sig = client_proof("SCRAM-SHA-256", "r0m30!", bare, server_first, without)
    probe.send(f"<response xmlns='{SASL_NS}'>{b64(f'{without},p={proof}'.encode())}"
               f"</response>".encode())
    probe.server.proof_checked(True)
    success = probe.collect()[0].element
    assert success.tag == ns.SASL_SUCCESS
    assert base64.b64decode(success.text or "") == f"v={sig}".encode()
    # without a binding (no certificate hash known) nothing -PLUS is offered or accepted
    plain = Probe()
    feats = b"".join(to_bytes(e.element) for e in plain.send(HEADER)
                     if isinstance(e, StanzaReceived))
    assert b"-PLUS" not in feats
    out = plain.elements(f"<auth xmlns='{SASL_NS}' mechanism='SCRAM-SHA-256-PLUS'>"
                         f"{b64((gs2 + bare).encode())}</auth>".encode())
    assert condition(out[0]) == "invalid-mechanism"
