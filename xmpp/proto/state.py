"""States of a c2s session and the table of allowed transitions (h11 ``_state.py`` style).

::

    CONNECTED --STARTTLS--> TLS_NEGOTIATING --TLS_STARTED--> SECURED --SASL_START--> SASL
    SASL --SASL_SUCCESS--> AUTHENTICATED --BIND_SUCCESS--> BOUND
    SASL --SASL_FAILURE--> SECURED          (or CONNECTED when SASL ran without TLS)
    any --CLOSE--> CLOSED

The direct-TLS role (port 5223, RFC 7590 / XEP-0368) starts in SECURED.
"""

from __future__ import annotations

from enum import Enum


class SessionState(Enum):
    CONNECTED = "connected"              # transport up, not secured, not authenticated
    TLS_NEGOTIATING = "tls-negotiating"  # <proceed/> sent; the driver is starting TLS
    SECURED = "secured"                  # TLS on, not authenticated
    SASL = "sasl"                        # a SASL exchange is in progress
    AUTHENTICATED = "authenticated"      # SASL succeeded (stream restarted), not bound
    BOUND = "bound"                      # resource bound; stanzas flow
    CLOSED = "closed"


class Trigger(Enum):
    STARTTLS = "starttls"
    TLS_STARTED = "tls-started"
    SASL_START = "sasl-start"
    SASL_SUCCESS = "sasl-success"
    SASL_FAILURE = "sasl-failure"
    SASL_FAILURE_INSECURE = "sasl-failure-insecure"
    BIND_SUCCESS = "bind-success"
    CLOSE = "close"


S, T = SessionState, Trigger

TRANSITIONS: dict[SessionState, dict[Trigger, SessionState]] = {
    S.CONNECTED: {T.STARTTLS: S.TLS_NEGOTIATING, T.SASL_START: S.SASL, T.CLOSE: S.CLOSED},
    S.TLS_NEGOTIATING: {T.TLS_STARTED: S.SECURED, T.CLOSE: S.CLOSED},
    S.SECURED: {T.SASL_START: S.SASL, T.CLOSE: S.CLOSED},
    S.SASL: {T.SASL_SUCCESS: S.AUTHENTICATED, T.SASL_FAILURE: S.SECURED,
             T.SASL_FAILURE_INSECURE: S.CONNECTED, T.CLOSE: S.CLOSED},
    S.AUTHENTICATED: {T.BIND_SUCCESS: S.BOUND, T.CLOSE: S.CLOSED},
    S.BOUND: {T.CLOSE: S.CLOSED},
    S.CLOSED: {T.CLOSE: S.CLOSED},
}

#: States in which the peer is not authenticated: only TLS and SASL are allowed
#: (RFC 6120 §4.9.3.12 not-authorized).
UNAUTHENTICATED = frozenset({S.CONNECTED, S.TLS_NEGOTIATING, S.SECURED, S.SASL})


class InvalidTransition(RuntimeError):
    """A driver or core bug: the trigger is not allowed in the current state."""


class StateMachine:
    """Holds the current state; ``fire`` applies a trigger from the table or raises."""

    __slots__ = ("state",)

    def __init__(self, initial: SessionState = S.CONNECTED) -> None:
        self.state = initial

    def fire(self, trigger: Trigger) -> SessionState:
        try:
            self.state = TRANSITIONS[self.state][trigger]
        except KeyError:
            raise InvalidTransition(f"{trigger.value} not allowed in {self.state.value}") from None
        return self.state

    def can(self, trigger: Trigger) -> bool:
        return trigger in TRANSITIONS[self.state]
