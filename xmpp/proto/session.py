"""The server side of one c2s stream (RFC 6120): sans-IO, no sockets, no clock.

Driver loop (one session per connection)::

    session = ServerSession(config)              # direct TLS: config.direct_tls=True
    on bytes:   session.receive_data(chunk)      # b"" on EOF
    then:       while (ev := session.next_event()) is not None: handle(ev)
                transport.write(session.data_to_send())
                if the state is CLOSED: close the transport after the write

Events ask the driver for work it does with I/O and answer through methods:
StartTLSRequested → ``tls_started()``; AuthRequested / PlainCredentials (the directory's
part of a SASL exchange of directory.sasl, the one SASL module) →
``sasl_continue(await auth.advance(session.sasl, ev.work))``; BindRequested → ``bound(jid)`` / ``bind_conflict()`` /
``bind_refused(error)``. While an answer is pending, input is held (after STARTTLS it is
discarded, RFC 6120 §5.4.3.3), so answers may arrive asynchronously.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from xml.etree.ElementTree import Element, SubElement

from directory.sasl import (
    Challenge,
    CheckPassword,
    CheckProof,
    Failure,
    NeedKeys,
    SaslServer,
    Step,
    Success,
)
from directory.scram import ScramKeys

from ..jid import JID, JIDError, nameprep, parse_jid
from . import inbound, ns, sasl
from .config import SessionConfig, post_auth_features, pre_auth_features
from .errors import SaslFailure, StanzaError, StreamError, error_reply, is_error_stanza
from .events import (
    Authenticated,
    AuthFailed,
    AuthRequested,
    BindRequested,
    NonzaReceived,
    ParserEvent,
    PlainCredentials,
    SessionBound,
    SessionEvent,
    StanzaFromClient,
    StanzaReceived,
    StartTLSRequested,
    StreamClosed,
    StreamEnded,
    StreamFailed,
    StreamOpened,
)
from .parser import StreamParser
from .serializer import STREAM_CLOSE, stream_header, to_bytes
from .state import UNAUTHENTICATED, SessionState, StateMachine, Trigger

S = SessionState


def _namespace(tag: str) -> str:
    return tag[1:tag.index("}")] if tag[:1] == "{" else ""


class ServerSession:
    """One client-to-server stream, from TCP accept to close."""

    def __init__(self, config: SessionConfig, *,
                 new_id: Callable[[], str]) -> None:
        self.config = config
        self._new_id = new_id
        self._machine = StateMachine(S.SECURED if config.direct_tls else S.CONNECTED)
        self.secured = config.direct_tls
        self._parser = StreamParser(
            content_ns=ns.CLIENT, max_stanza_bytes=config.max_stanza_bytes_unauthenticated,
            max_depth=config.max_depth)
        self._out: list[bytes] = []
        self._events: deque[SessionEvent] = deque()
        self._nonza_ns = config.features.nonza_namespaces()
        self.stream_id = ""
        self.domain: str | None = None   # the served domain the client asked for
        self.lang = config.lang
        self.username: str | None = None
        self.jid: JID | None = None
        self._jid_str = ""
        self._header_sent = False
        # Input scheduling: events of the last parsed chunk, the next one to handle, raw
        # bytes held while the driver's answer is pending, a pending stream restart.
        self._chunk: list[ParserEvent] = []
        self._cursor = 0
        self._held: list[bytes] = []
        self._waiting: str | None = None  # "tls" | "auth" | "bind"
        self._restart = False
        self._sasl: SaslServer | None = None
        self._auth_failures = 0
        self._bind_iq: Element | None = None

    # -- driver API: input/output ---------------------------------------------------------

    def release_parser(self) -> bool:
        """Give back the expat parser if the stream rests between stanzas (the driver calls
        this for an idle stream; memory per idle session). True if none is held now."""
        return self._parser.release()

    @property
    def state(self) -> SessionState:
        return self._machine.state

    def receive_data(self, data: bytes) -> None:
        """Bytes from the transport; ``b""`` means the peer closed the connection."""
        if self.state is S.CLOSED:
            return
        if not data:
            self._end(None, by_peer=True)
            return
        if self._waiting == "tls":
            return  # RFC 6120 §5.4.3.3: nothing before the TLS handshake is kept
        if self._waiting is not None:
            self._held.append(data)
            return
        self._feed(data)

    def next_event(self) -> SessionEvent | None:
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def send_stanza(self, element: Element) -> bool:
        """Queue a stanza for the bound client; False if the session cannot take it."""
        if self.state is not S.BOUND:
            return False
        self._out.append(to_bytes(element))
        return True

    def send_nonza(self, element: Element) -> bool:
        """Queue a first-level non-stanza element (feature modules: sm, csi)."""
        if self.state not in (S.AUTHENTICATED, S.BOUND):
            return False
        self._out.append(to_bytes(element))
        return True

    def close(self, error: StreamError | None = None) -> None:
        """Close the stream from our side (shutdown, conflict, timeout)."""
        if error is not None:
            self._fail(error)
        elif self.state is not S.CLOSED:
            if not self._header_sent:
                self._send_header()
            self._end(None, by_peer=False, send_close=True)

    # -- driver API: answers ----------------------------------------------------------------

    def tls_started(self) -> None:
        """TLS is up: the next bytes are a new stream over TLS (RFC 6120 §5.4.3.3)."""
        if self.state is S.CLOSED:
            return  # answers racing with a closed connection are ignored
        self._expect("tls")
        self._machine.fire(Trigger.TLS_STARTED)
        self.secured = True
        self._waiting = None
        self._held.clear()
        self._chunk, self._cursor = [], 0
        self._parser.reset()
        self._header_sent = False

    @property
    def sasl(self) -> SaslServer | None:
        """The SASL exchange in progress (for the driver's ``auth.advance``)."""
        return self._sasl

    def sasl_continue(self, step: Step) -> None:
        """The directory did its part of the exchange: `step` is what follows (a
        Challenge, Success or Failure)."""
        if self.state is S.CLOSED:
            return
        if self._sasl is None or self._waiting != "auth":
            raise RuntimeError("no authentication answer is pending")
        self._waiting = None
        mechanism = self._sasl.mechanism
        try:
            self._sasl_next(step)
        except SaslFailure as exc:
            self._sasl_fail(exc, mechanism)
        self._resume()

    def provide_scram_keys(self, keys: ScramKeys | None) -> None:
        """Test helper: keys for AuthRequested(NeedKeys); None: the directory failed."""
        if self.state is S.CLOSED:
            return
        ex = self._pending_sasl()
        self.sasl_continue(ex.keys(keys) if keys is not None else ex.fail("temporary"))

    def proof_checked(self, allowed: bool = True) -> None:
        """Test helper: answer AuthRequested(CheckProof) as the directory would when the
        lockout `allowed` the check."""
        if self.state is S.CLOSED:
            return
        ex = self._pending_sasl()
        self.sasl_continue(ex.proof_result(allowed and ex.check_proof()))

    def auth_result(self, ok: bool, condition: str = "not-authorized",
                    text: str | None = None) -> None:
        """Test helper: the verdict on PlainCredentials, or a failure instead of any
        answer (``temporary-auth-failure`` when the directory is down)."""
        if self.state is S.CLOSED:
            return
        ex = self._pending_sasl()
        if ok:
            self.sasl_continue(ex.verdict(True))
            return
        self._waiting = None
        self._sasl_fail(SaslFailure(condition, text), ex.mechanism)
        self._resume()

    def _pending_sasl(self) -> SaslServer:
        if self._sasl is None or self._waiting != "auth":
            raise RuntimeError("no authentication answer is pending")
        return self._sasl

    def bound(self, jid: JID) -> None:
        """Bind succeeded with this full JID (its resource may differ from the request)."""
        if self.state is S.CLOSED:
            return
        if self._waiting != "bind":
            raise RuntimeError("no bind answer is pending")
        if (jid.local != self.username or jid.domain != self.domain or not jid.resource):
            raise ValueError(f"{jid} is not a full JID of {self.username}@{self.domain}")
        iq = self._expect_bind()
        self.jid = jid
        self._jid_str = str(jid)
        result = Element(ns.IQ, {"type": "result", "id": iq.get("id", "")})
        SubElement(SubElement(result, ns.BIND_TAG), ns.q(ns.BIND, "jid")).text = self._jid_str
        self._out.append(to_bytes(result))
        self._machine.fire(Trigger.BIND_SUCCESS)
        self._events.append(SessionBound(jid))
        self._resume()

    def resumed(self, jid: JID) -> None:
        """A stream-management resumption (XEP-0198 §5) stands in for resource binding:
        this authenticated stream now carries the session of `jid` (no bind result is
        sent; the driver answers <resumed/>)."""
        if self.state is S.CLOSED:
            return
        if self.state is not S.AUTHENTICATED:
            raise RuntimeError("only an authenticated, unbound stream can resume")
        if jid.local != self.username or jid.domain != self.domain or not jid.resource:
            raise ValueError(f"{jid} is not a full JID of {self.username}@{self.domain}")
        self.jid = jid
        self._jid_str = str(jid)
        self._machine.fire(Trigger.BIND_SUCCESS)

    def bind_conflict(self) -> None:
        """The resource is taken and the policy is to refuse (RFC 6120 §7.7.2.2)."""
        self.bind_refused(StanzaError("conflict"))

    def bind_refused(self, error: StanzaError) -> None:
        """Refuse binding, e.g. resource-constraint or not-allowed (RFC 6120 §7.6.2)."""
        if self.state is S.CLOSED:
            return
        iq = self._expect_bind()
        self._out.append(to_bytes(error_reply(iq, error)))
        self._resume()

    # -- input scheduling ---------------------------------------------------------------------

    def _expect(self, what: str) -> None:
        if self._waiting != what:
            raise RuntimeError(f"no {what} answer is pending")
        self._waiting = None

    def _expect_bind(self) -> Element:
        self._expect("bind")
        iq, self._bind_iq = self._bind_iq, None
        assert iq is not None
        return iq

    def _feed(self, data: bytes) -> None:
        self._chunk = self._parser.feed(data)
        self._cursor = 0
        self._run()

    def _run(self) -> None:
        chunk = self._chunk
        while self._cursor < len(chunk):
            if self.state is S.CLOSED or self._waiting is not None:
                return
            index = self._cursor
            self._cursor = index + 1
            self._on_parser_event(chunk[index])
            if self._restart:
                self._do_restart(index)
                return
        if self._waiting is None and self._held and self.state is not S.CLOSED:
            data = b"".join(self._held)
            self._held.clear()
            self._feed(data)

    def _resume(self) -> None:
        if self._restart:
            self._do_restart(self._cursor - 1)
        else:
            self._run()

    def _do_restart(self, index: int) -> None:
        # RFC 6120 §6.4.6: after <success/> both sides start a new stream; bytes that
        # followed the element that completed SASL belong to the new stream.
        self._restart = False
        tail = self._parser.remainder_after(index) if 0 <= index < len(self._chunk) else b""
        self._parser.reset()
        self._header_sent = False
        self._chunk, self._cursor = [], 0
        data = tail + b"".join(self._held)
        self._held.clear()
        if data and self.state is not S.CLOSED:
            self._feed(data)

    # -- output helpers -------------------------------------------------------------------------

    def _send(self, element: Element, text: str | None = None) -> None:
        if text is not None:
            element.text = text
        self._out.append(to_bytes(element))

    def _send_header(self, to: str | None = None) -> None:
        self.stream_id = self._new_id()
        self._out.append(stream_header(
            from_=self.domain or self.config.domains[0], to=to, id=self.stream_id,
            lang=self.lang))
        self._header_sent = True

    def _end(self, error: StreamError | None, *, by_peer: bool, send_close: bool = False) -> None:
        if self.state is S.CLOSED:
            return
        if send_close:
            self._out.append(STREAM_CLOSE)
        self._machine.fire(Trigger.CLOSE)
        self._waiting = None
        self._held.clear()
        self._events.append(StreamEnded(error, by_peer))

    def _fail(self, error: StreamError) -> None:
        """Send a stream error and close (RFC 6120 §4.9.1.1); a header first if none was
        sent yet (§4.9.1.2)."""
        if self.state is S.CLOSED:
            return
        if not self._header_sent:
            self._send_header()
        self._out.append(to_bytes(error.to_element()))
        self._end(error, by_peer=False, send_close=True)

    def _reply_error(self, stanza: Element, error: StanzaError, from_: str | None = None) -> None:
        if not is_error_stanza(stanza):  # RFC 6120 §8.3.1: never answer an error
            self._out.append(to_bytes(error_reply(stanza, error, from_=from_)))

    # -- parser events ----------------------------------------------------------------------------

    def _on_parser_event(self, event: ParserEvent) -> None:
        if type(event) is StanzaReceived:
            self._on_element(event.element)
        elif type(event) is StreamOpened:
            self._on_stream_opened(event)
        elif type(event) is StreamClosed:
            self._end(None, by_peer=True, send_close=True)  # RFC 6120 §4.4
        elif type(event) is StreamFailed:
            self._fail(event.error)

    def _on_stream_opened(self, event: StreamOpened) -> None:
        self.lang = event.lang or self.lang
        # RFC 6120 §4.7.2, §4.9.3.6: 'to' must name a domain we serve.
        try:
            domain = nameprep(event.to) if event.to else None
        except JIDError:
            domain = None
        if domain is None or domain not in self.config.domains:
            self._fail(StreamError("host-unknown", "This server does not serve that domain"))
            return
        if self.domain is not None and domain != self.domain:
            self._fail(StreamError("not-authorized", "The domain changed on stream restart"))
            return
        self.domain = domain
        # RFC 6120 §4.7.1: answer 'to' with the client's 'from' when it is a valid JID.
        peer = None
        if event.from_:
            try:
                peer = str(parse_jid(event.from_))
            except JIDError:
                peer = None
        self._send_header(peer)
        # RFC 6120 §4.7.5: we speak 1.0 only; a missing version means 0.9.
        major = (event.version or "0").partition(".")[0]
        if not major.isdigit() or int(major) < 1:
            self._fail(StreamError("unsupported-version", "XMPP 1.0 is required"))
            return
        if self.state is S.AUTHENTICATED:
            self._out.append(to_bytes(post_auth_features(self.config)))
        else:
            self._out.append(to_bytes(pre_auth_features(self.config, self.secured)))

    def _on_element(self, el: Element) -> None:
        tag = el.tag
        state = self.state
        if tag == ns.STREAM_ERROR:
            self._end(StreamError.from_element(el), by_peer=True, send_close=True)
        elif state is S.BOUND:
            if tag in ns.STANZA_TAGS:
                self._on_stanza(el)
            elif _namespace(tag) in self._nonza_ns:
                self._events.append(NonzaReceived(el))
            else:
                self._fail(StreamError("unsupported-stanza-type"))  # RFC 6120 §4.9.3.24
        elif state is S.AUTHENTICATED:
            if tag == ns.IQ and el.get("type") == "set" and el.find(ns.BIND_TAG) is not None:
                self._on_bind(el)
            elif _namespace(tag) in self._nonza_ns:
                self._events.append(NonzaReceived(el))
            else:
                self._fail(StreamError("not-authorized", "Bind a resource first"))
        elif tag == ns.STARTTLS:
            self._on_starttls()
        elif tag in (ns.SASL_AUTH, ns.SASL_RESPONSE, ns.SASL_ABORT):
            self._on_sasl(el)
        else:
            # RFC 6120 §4.9.3.12: nothing but TLS and SASL before authentication.
            assert state in UNAUTHENTICATED
            self._fail(StreamError("not-authorized"))

    # -- STARTTLS (RFC 6120 §5) ---------------------------------------------------------------------

    def _on_starttls(self) -> None:
        if self.state is not S.CONNECTED or not self.config.tls_available:
            # RFC 6120 §5.4.2.2: <failure/>, then close the stream.
            self._send(Element(ns.TLS_FAILURE))
            self._end(None, by_peer=False, send_close=True)
            return
        self._send(Element(ns.PROCEED))
        self._machine.fire(Trigger.STARTTLS)
        self._waiting = "tls"
        self._chunk, self._cursor = [], 0
        self._events.append(StartTLSRequested())

    # -- SASL (RFC 6120 §6) -----------------------------------------------------------------------

    def _on_sasl(self, el: Element) -> None:
        mechanism = self._sasl.mechanism if self._sasl else el.get("mechanism", "")
        try:
            if el.tag == ns.SASL_ABORT:
                raise SaslFailure("aborted")  # RFC 6120 §6.4.4
            if el.tag == ns.SASL_AUTH:
                if self.state is S.SASL:
                    raise SaslFailure("malformed-request", "An exchange is in progress")
                self._sasl_start(el)
            elif self._sasl is None:
                raise SaslFailure("malformed-request", "No exchange in progress")
            else:
                self._sasl_next(self._sasl.receive(sasl.decode(el.text) or b""))
        except SaslFailure as failure:
            self._sasl_fail(failure, mechanism)

    def _sasl_start(self, el: Element) -> None:
        mechanism = el.get("mechanism", "")
        if mechanism not in sasl.SUPPORTED or mechanism not in self.config.mechanisms:
            raise SaslFailure("invalid-mechanism")  # RFC 6120 §6.5.7
        binding = self.config.binding if self.secured else None
        if mechanism.endswith("-PLUS") and binding is None:
            raise SaslFailure("invalid-mechanism")  # not offered on this stream
        if not self.secured and (self.config.tls_required or mechanism in sasl.NEEDS_TLS):
            raise SaslFailure("encryption-required")  # RFC 6120 §6.5.4
        data = sasl.decode(el.text)
        assert self.domain is not None
        self._machine.fire(Trigger.SASL_START)
        self._sasl = SaslServer(mechanism, prepare=sasl.preparer(self.domain), binding=binding,
                                plus_offered=binding is not None)
        # RFC 6120 §6.4.2: no initial response → an empty challenge.
        self._sasl_next(self._sasl.start(data))

    def _sasl_next(self, step: Step) -> None:
        """Act on the exchange's next step (directory.sasl)."""
        ex = self._sasl
        assert ex is not None
        if isinstance(step, Challenge):
            self._send(Element(ns.SASL_CHALLENGE), sasl.encode(step.data) if step.data else None)
        elif isinstance(step, Success):
            self._sasl_success(step.data)
        elif isinstance(step, Failure):
            raise sasl.failure(step)
        elif isinstance(step, CheckPassword):
            self._waiting = "auth"
            self._events.append(PlainCredentials(step.username, step.password, ex.authzid, step))
        elif isinstance(step, NeedKeys | CheckProof):
            self._waiting = "auth"
            self._events.append(AuthRequested(ex.mechanism, step.username, ex.authzid, step))

    def _sasl_success(self, additional: bytes) -> None:
        ex = self._sasl
        assert ex is not None and ex.done
        # RFC 6120 §6.4.6: additional data with success (SCRAM server-final).
        self._send(Element(ns.SASL_SUCCESS), sasl.encode(additional) if additional else None)
        self._machine.fire(Trigger.SASL_SUCCESS)
        self.username = ex.username
        self._sasl = None
        self._parser.max_stanza_bytes = self.config.max_stanza_bytes
        self._restart = True
        self._events.append(Authenticated(ex.username, ex.mechanism))

    def _sasl_fail(self, failure: SaslFailure, mechanism: str) -> None:
        username = self._sasl.username if self._sasl else ""
        self._sasl = None
        self._send(failure.to_element())  # RFC 6120 §6.4.5
        self._events.append(AuthFailed(mechanism, username, failure.condition))
        if self.state is S.SASL:
            self._machine.fire(Trigger.SASL_FAILURE if self.secured
                               else Trigger.SASL_FAILURE_INSECURE)
        if failure.condition != "aborted":
            self._auth_failures += 1
            if self._auth_failures >= self.config.max_auth_failures:
                self._fail(StreamError("policy-violation", "Too many failed authentications"))

    # -- resource binding (RFC 6120 §7) -------------------------------------------------------------

    def _on_bind(self, iq: Element) -> None:
        request = inbound.bind_request(iq, self._new_id)
        if isinstance(request, StanzaError):
            self._reply_error(iq, request)
            return
        self._bind_iq = iq
        self._waiting = "bind"
        self._events.append(BindRequested(*request))

    # -- stanzas from a bound client (RFC 6120 §8) ---------------------------------------------------

    def _on_stanza(self, el: Element) -> None:
        assert self.jid is not None and self.domain is not None
        verdict = inbound.vet_stanza(el, self.jid, self.domain)
        if verdict is inbound.Verdict.ROUTE:
            self._events.append(StanzaFromClient(el))
        elif isinstance(verdict, StreamError):
            self._fail(verdict)
        elif isinstance(verdict, Element):
            self._out.append(to_bytes(verdict))
