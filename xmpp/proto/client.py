"""The client side of a c2s stream, sans-IO: for tests and the load harness.

It negotiates STARTTLS (the driver does the TLS), SASL (SCRAM-SHA-256, SCRAM-SHA-1 or
PLAIN, verifying the SCRAM server signature) and resource binding, then exchanges stanzas.
Same driving pattern as ServerSession: ``receive_data``, ``next_event``, ``data_to_send``.
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Callable
from enum import Enum
from xml.etree.ElementTree import Element, SubElement

from directory.scram import client_proof

from ..jid import JID
from . import ns, sasl
from .errors import StanzaError, StreamError
from .events import (
    Authenticated,
    AuthFailed,
    BindFailed,
    NonzaReceived,
    SessionBound,
    SessionEvent,
    StanzaReceived,
    StanzaToClient,
    StartTLSRequested,
    StreamClosed,
    StreamEnded,
    StreamFailed,
    StreamOpened,
)
from .parser import StreamParser
from .serializer import STREAM_CLOSE, stream_header, to_bytes


class ClientState(Enum):
    NEGOTIATING = "negotiating"  # before authentication (TLS and SASL)
    AUTHENTICATED = "authenticated"
    BOUND = "bound"
    CLOSED = "closed"


#: What this client implements, strongest first (no channel binding: no -PLUS).
CLIENT_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")

def _saslname(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")  # RFC 5802 §5.1


class ClientSession:
    """Logs in as `jid` (its resource, if any, is requested at bind time)."""

    def __init__(self, jid: JID, password: str, *,
                 mechanisms: tuple[str, ...] = CLIENT_MECHANISMS, direct_tls: bool = False,
                 require_tls: bool = True, max_stanza_bytes: int = 1 << 20,
                 new_nonce: Callable[[], str]) -> None:
        self._new_nonce = new_nonce  # SCRAM client nonce source (randomness injected)
        self.jid = jid
        self.password = password
        self.mechanisms = mechanisms
        self.secured = direct_tls
        self.require_tls = require_tls
        self.state = ClientState.NEGOTIATING
        self.bound_jid: JID | None = None
        self.stream_id: str | None = None
        self._parser = StreamParser(content_ns=ns.CLIENT, max_stanza_bytes=max_stanza_bytes)
        self._out: list[bytes] = []
        self._events: deque[SessionEvent] = deque()
        self._mechanism = ""
        self._scram: tuple[str, str] | None = None  # (client-first-bare, nonce)
        self._server_signature = ""
        self._waiting_tls = False

    # -- driver API ---------------------------------------------------------------------------

    def start(self) -> None:
        """Send the initial stream header."""
        self._out.append(stream_header(to=self.jid.domain, from_=str(self.jid.bare)))

    def receive_data(self, data: bytes) -> None:
        if self.state is ClientState.CLOSED or self._waiting_tls:
            return
        if not data:
            self._end(None, by_peer=True)
            return
        for event in self._parser.feed(data):
            if type(event) is StanzaReceived:
                self._on_element(event.element)
            elif type(event) is StreamOpened:
                self.stream_id = event.id
            elif type(event) is StreamClosed:
                self._end(None, by_peer=True, send_close=True)
            elif type(event) is StreamFailed:
                self._fail(event.error)
            if self.state is ClientState.CLOSED or self._waiting_tls:
                return

    def next_event(self) -> SessionEvent | None:
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def tls_started(self) -> None:
        """TLS is up after <proceed/>: restart the stream (RFC 6120 §5.4.3.3)."""
        if not self._waiting_tls:
            raise RuntimeError("no STARTTLS in progress")
        self._waiting_tls = False
        self.secured = True
        self._restart()

    def send_stanza(self, element: Element) -> None:
        if self.state is not ClientState.BOUND:
            raise RuntimeError("not bound")
        self._out.append(to_bytes(element))

    def send_raw(self, data: bytes) -> None:
        """Queue bytes as they are (tests of malformed input)."""
        self._out.append(data)

    def close(self) -> None:
        self._end(None, by_peer=False, send_close=True)

    # -- internals ----------------------------------------------------------------------------

    def _send(self, element: Element, text: str | None = None) -> None:
        if text is not None:
            element.text = text
        self._out.append(to_bytes(element))

    def _restart(self) -> None:
        self._parser.reset()
        self.start()

    def _end(self, error: StreamError | None, *, by_peer: bool, send_close: bool = False) -> None:
        if self.state is ClientState.CLOSED:
            return
        if send_close:
            self._out.append(STREAM_CLOSE)
        self.state = ClientState.CLOSED
        self._events.append(StreamEnded(error, by_peer))

    def _fail(self, error: StreamError) -> None:
        self._out.append(to_bytes(error.to_element()))
        self._end(error, by_peer=False, send_close=True)

    def _on_element(self, el: Element) -> None:
        tag = el.tag
        if tag == ns.FEATURES:
            self._on_features(el)
        elif tag == ns.STREAM_ERROR:
            self._end(StreamError.from_element(el), by_peer=True, send_close=True)
        elif tag == ns.PROCEED:
            self._waiting_tls = True
            self._events.append(StartTLSRequested())
        elif tag == ns.TLS_FAILURE:
            self._end(None, by_peer=True)
        elif tag == ns.SASL_CHALLENGE:
            self._on_challenge(sasl.decode(el.text) or b"")
        elif tag == ns.SASL_SUCCESS:
            self._on_success(sasl.decode(el.text) or b"")
        elif tag == ns.SASL_FAILURE:
            condition = next((c.tag.partition("}")[2] for c in el
                              if c.tag != ns.q(ns.SASL, "text")), "not-authorized")
            self._events.append(AuthFailed(self._mechanism, self.jid.local, condition))
            self.close()
        elif self.state is ClientState.AUTHENTICATED and tag == ns.IQ \
                and el.get("id") == "bind_1":
            self._on_bind_result(el)
        elif self.state is ClientState.BOUND and tag in ns.STANZA_TAGS:
            self._events.append(StanzaToClient(el))
        else:
            self._events.append(NonzaReceived(el))

    def _on_features(self, features: Element) -> None:
        if self.state is ClientState.AUTHENTICATED:
            if features.find(ns.BIND_TAG) is None:
                self._fail(StreamError("unsupported-feature", "No resource binding"))
                return
            iq = Element(ns.IQ, {"type": "set", "id": "bind_1"})
            bind = SubElement(iq, ns.BIND_TAG)
            if self.jid.resource:
                SubElement(bind, ns.q(ns.BIND, "resource")).text = self.jid.resource
            self._send(iq)
            return
        if not self.secured and features.find(ns.STARTTLS) is not None:
            self._send(Element(ns.STARTTLS))
            return
        if not self.secured and self.require_tls:
            self._fail(StreamError("policy-violation", "TLS is required"))
            return
        offered = [m.text for m in features.iterfind(
            f"{ns.SASL_MECHANISMS}/{ns.q(ns.SASL, 'mechanism')}")]
        choice = next((m for m in self.mechanisms if m in offered), None)
        if choice is None:
            self._events.append(AuthFailed("", self.jid.local, "invalid-mechanism"))
            self.close()
            return
        self._mechanism = choice
        if choice == "PLAIN":
            message = f"\0{self.jid.local}\0{self.password}".encode()
        else:
            nonce = self._new_nonce()
            bare = f"n={_saslname(self.jid.local)},r={nonce}"
            self._scram = (bare, nonce)
            message = b"n,," + bare.encode()
        self._send(Element(ns.SASL_AUTH, {"mechanism": choice}), sasl.encode(message))

    def _on_challenge(self, data: bytes) -> None:
        if self._scram is None:
            self._send(Element(ns.SASL_ABORT))
            return
        bare, nonce = self._scram
        server_first = data.decode()
        attrs = dict(p.split("=", 1) for p in server_first.split(",") if "=" in p)
        if not attrs.get("r", "").startswith(nonce):
            self._send(Element(ns.SASL_ABORT))
            return
        without_proof = f"c={base64.b64encode(b'n,,').decode()},r={attrs['r']}"
        proof, self._server_signature = client_proof(
            self._mechanism, self.password, bare, server_first, without_proof)
        final = f"{without_proof},p={proof}".encode()
        self._send(Element(ns.SASL_RESPONSE), sasl.encode(final))

    def _on_success(self, data: bytes) -> None:
        # RFC 5802 §3: the client MUST verify the server signature.
        if self._scram is not None and data != f"v={self._server_signature}".encode():
            self._events.append(AuthFailed(self._mechanism, self.jid.local, "server-signature"))
            self.close()
            return
        self.state = ClientState.AUTHENTICATED
        self._events.append(Authenticated(self.jid.local, self._mechanism))
        self._restart()  # RFC 6120 §6.4.6

    def _on_bind_result(self, iq: Element) -> None:
        if iq.get("type") == "result":
            text = iq.findtext(f"{ns.BIND_TAG}/{ns.q(ns.BIND, 'jid')}") or ""
            self.bound_jid = JID.parse(text)
            self.state = ClientState.BOUND
            self._events.append(SessionBound(self.bound_jid))
        else:
            error = iq.find(ns.ERROR)
            err = StanzaError.from_element(error) if error is not None \
                else StanzaError("undefined-condition")
            self._events.append(BindFailed(err))
