"""The presence subscription state machine (RFC 6121 §3 and Appendix A), pure.

A roster item's state is (subscription, ask, pending_in): `ask` is an outbound request
not yet answered, `pending_in` an inbound one the user has not yet approved.
"""

from __future__ import annotations

from dataclasses import dataclass

SUBSCRIPTIONS = ("none", "to", "from", "both")


@dataclass(frozen=True, slots=True)
class SubState:
    subscription: str = "none"
    ask: bool = False
    pending_in: bool = False

    @property
    def has_to(self) -> bool:
        return self.subscription in ("to", "both")

    @property
    def has_from(self) -> bool:
        return self.subscription in ("from", "both")


def _with(to: bool, from_: bool) -> str:
    return ("both" if from_ else "to") if to else ("from" if from_ else "none")


@dataclass(frozen=True, slots=True)
class Outcome:
    state: SubState
    forward: bool       # route (outbound) or deliver to the user (inbound)
    changed: bool       # the roster item changed: push it (RFC 6121 §2.1.6)
    auto_reply: str | None = None  # inbound: answer on the user's behalf (§3.1.3)


def outbound(s: SubState, ptype: str) -> Outcome:
    """The user sends `ptype` to the contact (RFC 6121 Appendix A.2, A.4)."""
    if ptype == "subscribe":
        if s.has_to:  # A.2.1: already subscribed: no change, still routed
            return Outcome(s, True, False)
        new = SubState(s.subscription, True, s.pending_in)
    elif ptype == "unsubscribe":  # §3.3.2
        new = SubState(_with(False, s.has_from), False, s.pending_in)
    elif ptype == "subscribed":  # §3.1.5: approve a pending request
        if not s.pending_in or s.has_from:
            return Outcome(s, False, False)  # no pre-approval support: nothing to do
        new = SubState(_with(s.has_to, True), s.ask, False)
    elif ptype == "unsubscribed":  # §3.2.2: cancel or deny
        new = SubState(_with(s.has_to, False), s.ask, False)
    else:
        raise ValueError(ptype)
    return Outcome(new, True, new != s)


def inbound(s: SubState, ptype: str) -> Outcome:
    """The contact's `ptype` arrives for the user (RFC 6121 Appendix A.3, A.5)."""
    if ptype == "subscribe":
        if s.has_from:  # §3.1.3: already approved: answer 'subscribed' ourselves
            return Outcome(s, False, False, auto_reply="subscribed")
        new = SubState(s.subscription, s.ask, True)
        return Outcome(new, True, False)
    if ptype == "subscribed":  # §3.1.6: only meaningful when we asked
        if not s.ask:
            return Outcome(s, False, False)
        new = SubState(_with(True, s.has_from), False, s.pending_in)
    elif ptype == "unsubscribe":  # §3.3.3
        if not s.has_from and not s.pending_in:
            return Outcome(s, False, False)
        new = SubState(_with(s.has_to, False), s.ask, False)
    elif ptype == "unsubscribed":  # §3.2.3
        if not s.has_to and not s.ask:
            return Outcome(s, False, False)
        new = SubState(_with(False, s.has_from), False, s.pending_in)
    else:
        raise ValueError(ptype)
    return Outcome(new, True, new.subscription != s.subscription or new.ask != s.ask)
