"""Sans-IO XMPP c2s stream core (RFC 6120): no sockets, no asyncio, no clock.

- ``parser.StreamParser``: bytes → StreamOpened / StanzaReceived / StreamClosed / StreamFailed
- ``serializer``: Element → bytes in the stream's namespace context; stream header
- ``errors``: StreamError, StanzaError, SaslFailure, ``error_reply``
- ``session.ServerSession``: the c2s state machine (STARTTLS, SASL, bind, stanzas)
- ``client.ClientSession``: the client side, for tests and the load harness
- ``config``: SessionConfig, FeaturesConfig; ``state``: SessionState and its table

An asyncio driver calls ``receive_data``, drains ``next_event()``, answers the request
events (see ``session`` docstring) and writes ``data_to_send()``.
"""

from .client import ClientSession, ClientState
from .config import FeaturesConfig, SessionConfig
from .errors import SaslFailure, StanzaError, StreamError, error_reply, is_error_stanza
from .events import (
    Authenticated,
    AuthFailed,
    AuthRequested,
    BindFailed,
    BindRequested,
    NonzaReceived,
    PlainCredentials,
    SessionBound,
    StanzaFromClient,
    StanzaReceived,
    StanzaToClient,
    StartTLSRequested,
    StreamClosed,
    StreamEnded,
    StreamFailed,
    StreamOpened,
)
from .parser import StreamParser
from .serializer import STREAM_CLOSE, stream_header, to_bytes, to_string
from .session import ServerSession
from .state import SessionState

__all__ = [
    "STREAM_CLOSE", "AuthFailed", "AuthRequested", "Authenticated", "BindFailed",
    "BindRequested", "ClientSession", "ClientState", "FeaturesConfig", "NonzaReceived",
    "PlainCredentials", "SaslFailure", "ServerSession", "SessionBound", "SessionConfig",
    "SessionState", "StanzaError", "StanzaFromClient", "StanzaReceived", "StanzaToClient",
    "StartTLSRequested", "StreamClosed", "StreamEnded", "StreamError", "StreamFailed",
    "StreamOpened", "StreamParser", "error_reply", "is_error_stanza", "stream_header",
    "to_bytes", "to_string",
]
