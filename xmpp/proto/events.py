"""Events of the XMPP stream core: frozen dataclasses named as facts.

Parser events come out of ``StreamParser.feed``; session events come out of
``ServerSession.next_event`` / ``ClientSession.next_event``. Events that carry an Element
compare by identity (``eq=False``): elements are mutable trees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.etree.ElementTree import Element

from ..jid import JID
from .errors import StanzaError, StreamError

# --- parser events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer's opening ``<stream:stream>`` tag (RFC 6120 §4.7)."""

    to: str | None = None
    from_: str | None = None
    version: str | None = None
    lang: str | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True, eq=False)
class StanzaReceived:
    """A complete first-level element: a stanza or a nonza (e.g. ``<auth/>``, ``<r/>``)."""

    element: Element


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """The peer sent ``</stream:stream>`` (RFC 6120 §4.4)."""


@dataclass(frozen=True, slots=True)
class StreamFailed:
    """The input broke the stream; the error must be sent and the stream closed."""

    error: StreamError


ParserEvent = StreamOpened | StanzaReceived | StreamClosed | StreamFailed

# --- session events (server side) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartTLSRequested:
    """``<proceed/>`` is queued: flush ``data_to_send()``, start TLS, then ``tls_started()``."""


@dataclass(frozen=True, slots=True)
class AuthRequested:
    """The SASL exchange (directory.sasl) needs the directory: `work` is its step
    (NeedKeys or CheckProof). A driver answers ``sasl_continue(await
    auth.advance(session.sasl, work))``; a test may answer ``provide_scram_keys(keys)`` /
    ``proof_checked(allowed)``."""

    mechanism: str
    username: str
    authzid: str = ""
    work: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class PlainCredentials:
    """SASL PLAIN credentials to verify: `work` is the CheckPassword step; answer as for
    AuthRequested, or ``auth_result(ok)``."""

    username: str
    password: str = field(repr=False)
    authzid: str = ""
    work: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Authenticated:
    """SASL succeeded for `username` (a normalised localpart); the stream restarts."""

    username: str
    mechanism: str


@dataclass(frozen=True, slots=True)
class AuthFailed:
    """A SASL attempt failed (for logging and rate limiting); the client may retry."""

    mechanism: str
    username: str
    condition: str


@dataclass(frozen=True, slots=True)
class BindRequested:
    """The client asks for `resource` (already resourceprep'd, or server-generated):
    answer ``bound(full_jid)``, ``bind_conflict()`` or ``bind_refused(error)``."""

    resource: str
    generated: bool = False


@dataclass(frozen=True, slots=True)
class SessionBound:
    """The resource is bound; stanzas from the client now flow as StanzaFromClient."""

    jid: JID


@dataclass(frozen=True, slots=True, eq=False)
class StanzaFromClient:
    """A validated stanza from a bound client, 'from' stamped (RFC 6120 §8.1.2.1) and
    'to' normalised (RFC 6120 §8.1.1.1)."""

    element: Element


@dataclass(frozen=True, slots=True, eq=False)
class NonzaReceived:
    """A first-level non-stanza element in a namespace a feature module registered
    (e.g. XEP-0198 ``<r/>``, XEP-0352 ``<active/>``)."""

    element: Element


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The stream is over: flush ``data_to_send()`` then close the transport.

    `error` is the stream error sent or received (None for a clean close);
    `by_peer` says whether the peer ended it.
    """

    error: StreamError | None = None
    by_peer: bool = False


# --- client-side events (ClientSession) --------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class StanzaToClient:
    """A stanza the server delivered to a bound client."""

    element: Element


@dataclass(frozen=True, slots=True)
class BindFailed:
    """The server refused resource binding."""

    error: StanzaError


SessionEvent = (
    StartTLSRequested | AuthRequested | PlainCredentials | Authenticated | AuthFailed
    | BindRequested | SessionBound | StanzaFromClient | NonzaReceived | StreamEnded
    | StanzaToClient | BindFailed
)
