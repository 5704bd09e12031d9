"""Session states and which commands each allows (RFC 3501 §3, §6)."""

from __future__ import annotations

from enum import Enum

from . import commands as c

__all__ = ["SessionState", "ALLOWED", "allowed", "next_state"]


class SessionState(Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


S = SessionState

# RFC 3501 §6.1: any state
_ANY: set[type[c.Command]] = {c.Capability, c.Noop, c.Logout, c.Id}
# RFC 3501 §6.2. COMPRESS (RFC 4978) only after authentication: compressing
# before login would let an unauthenticated peer spend our CPU on inflating
_NOT_AUTH = _ANY | {c.StartTLS, c.Authenticate, c.Login}
# RFC 3501 §6.3 and extensions usable without a selected mailbox
_AUTH = _ANY | {
    c.Select,
    c.Create,
    c.Delete,
    c.Rename,
    c.Subscribe,
    c.Unsubscribe,
    c.List,
    c.Lsub,
    c.Status,
    c.Append,
    c.Idle,
    c.Enable,
    c.Namespace,
    c.GetQuota,
    c.GetQuotaRoot,
    c.Compress,
}
# RFC 3501 §6.4
_SELECTED = _AUTH | {
    c.Check,
    c.Close,
    c.Unselect,
    c.Expunge,
    c.Search,
    c.Fetch,
    c.Store,
    c.Copy,
    c.Move,
    c.Sort,  # RFC 5256
    c.Thread,
}

ALLOWED: dict[SessionState, frozenset[type[c.Command]]] = {
    S.NOT_AUTHENTICATED: frozenset(_NOT_AUTH),
    S.AUTHENTICATED: frozenset(_AUTH),
    S.SELECTED: frozenset(_SELECTED),
    S.LOGOUT: frozenset(),
}

# (state, command type, tagged status) → new state. Missing entries keep the state.
_TRANSITIONS: dict[tuple[SessionState, type[c.Command], str], SessionState] = {
    (S.NOT_AUTHENTICATED, c.Login, "OK"): S.AUTHENTICATED,
    (S.NOT_AUTHENTICATED, c.Authenticate, "OK"): S.AUTHENTICATED,
    (S.AUTHENTICATED, c.Select, "OK"): S.SELECTED,
    (S.SELECTED, c.Select, "OK"): S.SELECTED,
    (S.SELECTED, c.Close, "OK"): S.AUTHENTICATED,
    (S.SELECTED, c.Unselect, "OK"): S.AUTHENTICATED,
}


def allowed(state: SessionState, command: c.Command) -> bool:
    return type(command) in ALLOWED[state]


def next_state(state: SessionState, command: c.Command, status: str) -> SessionState:
    """State after the server answers ``command`` with tagged ``status``."""
    if isinstance(command, c.Logout):
        return S.LOGOUT
    if isinstance(command, c.Select) and status != "OK":
        # RFC 3501 §6.3.1: a SELECT/EXAMINE that fails (NO or BAD) leaves no mailbox selected
        return S.AUTHENTICATED if state in (S.AUTHENTICATED, S.SELECTED) else state
    return _TRANSITIONS.get((state, type(command), status), state)
