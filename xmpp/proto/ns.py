"""XML namespaces and Clark-notation tags used by the XMPP core (RFC 6120, RFC 6121)."""

from __future__ import annotations

STREAMS = "http://etherx.jabber.org/streams"
CLIENT = "jabber:client"
SERVER = "jabber:server"
XML = "http://www.w3.org/XML/1998/namespace"
TLS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION = "urn:ietf:params:xml:ns:xmpp-session"
STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
STANZA_ERRORS = "urn:ietf:params:xml:ns:xmpp-stanzas"
SM = "urn:xmpp:sm:3"
CSI = "urn:xmpp:csi:0"
ROSTER_VER = "urn:xmpp:features:rosterver"
CAPS = "http://jabber.org/protocol/caps"

#: Namespaces whose top-level elements are stanzas (RFC 6120 §4.8.2, content namespaces).
CONTENT_NAMESPACES = frozenset({CLIENT, SERVER})


def q(ns: str, local: str) -> str:
    """Clark notation ``{ns}local``, as used by xml.etree."""
    return f"{{{ns}}}{local}"


XML_LANG = q(XML, "lang")
STREAM = q(STREAMS, "stream")
FEATURES = q(STREAMS, "features")
STREAM_ERROR = q(STREAMS, "error")

MESSAGE = q(CLIENT, "message")
PRESENCE = q(CLIENT, "presence")
IQ = q(CLIENT, "iq")
ERROR = q(CLIENT, "error")
STANZA_TAGS = frozenset({MESSAGE, PRESENCE, IQ})

STARTTLS = q(TLS, "starttls")
PROCEED = q(TLS, "proceed")
TLS_FAILURE = q(TLS, "failure")

SASL_AUTH = q(SASL, "auth")
SASL_RESPONSE = q(SASL, "response")
SASL_ABORT = q(SASL, "abort")
SASL_CHALLENGE = q(SASL, "challenge")
SASL_SUCCESS = q(SASL, "success")
SASL_FAILURE = q(SASL, "failure")
SASL_MECHANISMS = q(SASL, "mechanisms")

BIND_TAG = q(BIND, "bind")
SESSION_TAG = q(SESSION, "session")
