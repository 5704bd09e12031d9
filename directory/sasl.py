"""The one SASL server of SMTP, IMAP and XMPP (RFC 4422). Pure; sans-IO; no clock.

Mechanisms: PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login), SCRAM-SHA-1 and
SCRAM-SHA-256 (RFC 5802, RFC 7677) and their -PLUS variants with tls-server-end-point
channel binding (RFC 5929 §4) where the connection is TLS.

One ``SaslServer`` per exchange. The protocol glue decodes the protocol's framing (base64
lines, XML elements), feeds the client's messages in and acts on the returned step:

* ``Challenge(data)``: send it, then ``receive(response)``.
* ``CheckPassword`` / ``NeedKeys`` / ``CheckProof``: work for the directory; the driver
  hands the step to ``Authenticator.advance()`` which answers through ``verdict()``,
  ``keys()`` or ``proof_result()`` and returns the next step.
* ``Success(username, data)`` / ``Failure(condition)``: the exchange is over.

Failure conditions are protocol-neutral; each protocol maps them to its reply
(``malformed``, ``not-authorized``, ``invalid-authzid``, ``aborted``, ``temporary``,
``invalid-mechanism``, ``encryption-required``). Unknown, disabled and locked users all
end in ``not-authorized``, after the same steps as a wrong password.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from directory.scram import ScramError, ScramKeys, ScramServer, base_mechanism

#: Everything this module implements, strongest first.
MECHANISMS = ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1",
              "PLAIN", "LOGIN")
#: Mechanisms that send the password itself: only over TLS (RFC 4954 §4, RFC 6120 §13.9.4).
PASSWORD_MECHANISMS = frozenset({"PLAIN", "LOGIN"})
#: Longest client message we accept (RFC 4616 §2 asks for 255 octets per field).
MAX_MESSAGE = 4096


@dataclass(frozen=True)
class ChannelBinding:
    """What identifies this TLS channel: RFC 5929 type name and data."""

    kind: str
    data: bytes


def offered(mechanisms: tuple[str, ...], *, secured: bool,
            binding: ChannelBinding | None) -> tuple[str, ...]:
    """The mechanisms to advertise: password ones only when `secured`, -PLUS only when
    there is a channel binding we can compute (advertise only what works)."""
    out = []
    for m in mechanisms:
        if m not in MECHANISMS:
            continue
        if m in PASSWORD_MECHANISMS and not secured:
            continue
        if m.endswith("-PLUS") and binding is None:
            continue
        out.append(m)
    return tuple(out)


@dataclass(frozen=True)
class Challenge:
    data: bytes


@dataclass(frozen=True)
class CheckPassword:
    username: str
    password: str


@dataclass(frozen=True)
class NeedKeys:
    username: str
    mechanism: str  # SCRAM-SHA-1 or SCRAM-SHA-256 (keys are the same for -PLUS)


@dataclass(frozen=True)
class CheckProof:
    username: str


@dataclass(frozen=True)
class Success:
    username: str
    data: bytes = b""  # additional data with success (SCRAM server-final), RFC 4422 §3.6


@dataclass(frozen=True)
class Failure:
    condition: str
    text: str = ""


Step = Challenge | CheckPassword | NeedKeys | CheckProof | Success | Failure
#: Steps the directory answers (``Authenticator.advance``).
DirectoryWork = CheckPassword | NeedKeys | CheckProof


def _identity(name: str) -> str:
    return name


def _utf8(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Fail("malformed") from None
    if not text or any(ch in text for ch in "\0\r\n"):
        raise _Fail("malformed")
    return text


class _Fail(Exception):
    def __init__(self, condition: str) -> None:
        super().__init__(condition)
        self.condition = condition


class SaslServer:
    """One server-side SASL exchange.

    `prepare` maps a client's username to the directory's name for it (``user`` and
    ``user@domain`` alike) and raises ValueError for names that cannot be ours.
    `final_in_challenge`: the protocol cannot carry data with success (IMAP4rev1, SMTP),
    so SCRAM's server-final goes in a last challenge answered by an empty response.
    """

    def __init__(self, mechanism: str, *, prepare: Callable[[str], str] = _identity,
                 binding: ChannelBinding | None = None, plus_offered: bool = False,
                 final_in_challenge: bool = False, nonce: str | None = None) -> None:
        self.mechanism = mechanism
        self.username = ""
        self.authzid = ""  # the authorization identity the client asked for (its own)
        self.account: object | None = None  # set by the authenticator (the verified user)
        self.lookup: object | None = None   # the authenticator's note between SCRAM steps
        self._prepare = prepare
        self._final_in_challenge = final_in_challenge
        self._stage = "start"
        self._scram: ScramServer | None = None
        self._login_user = ""
        self._server_final = b""
        if mechanism not in MECHANISMS:
            self._stage = "invalid"
        elif mechanism.startswith("SCRAM-"):
            if mechanism.endswith("-PLUS") and binding is None:
                self._stage = "invalid"
            else:
                self._scram = ScramServer(
                    mechanism, nonce,
                    binding=(binding.kind, binding.data) if binding else None,
                    plus_offered=plus_offered)

    @property
    def done(self) -> bool:
        return self._stage in ("done", "invalid")

    @property
    def scram(self) -> ScramServer | None:
        return self._scram

    # -- client input -------------------------------------------------------------------

    def start(self, initial: bytes | None) -> Step:
        """The exchange begins; `initial` is the initial response if the client sent one
        (RFC 4422 §3.3; ``b""`` is an empty one)."""
        if self._stage == "invalid":
            return self._end(Failure("invalid-mechanism"))
        if self._stage != "start":
            return self._end(Failure("malformed", "exchange already started"))
        self._stage = "first"
        if initial is None:
            if self.mechanism == "LOGIN":
                self._stage = "login-user"
                return Challenge(b"Username:")
            return Challenge(b"")
        return self.receive(initial)

    def receive(self, data: bytes) -> Step:
        """The client's next message."""
        try:
            if len(data) > MAX_MESSAGE:
                raise _Fail("malformed")
            return self._receive(data)
        except _Fail as exc:
            return self._end(Failure(exc.condition))
        except ScramError as exc:
            return self._end(Failure(_scram_condition(exc.code)))

    def abort(self) -> Step:
        """The client gave up (``*`` in SMTP/IMAP, ``<abort/>`` in XMPP)."""
        return self._end(Failure("aborted"))

    def _receive(self, data: bytes) -> Step:
        stage = self._stage
        if stage == "first" and self.mechanism == "PLAIN":
            return self._plain(data)
        if stage == "first" and self.mechanism == "LOGIN":
            if not data:  # an empty initial response: ask as if there was none
                self._stage = "login-user"
                return Challenge(b"Username:")
            stage = "login-user"
        if stage == "login-user":
            self._login_user = self._name(_utf8(data))
            self._stage = "login-password"
            return Challenge(b"Password:")
        if stage == "login-password":
            return self._password(_utf8(data))
        if stage == "first" and self._scram is not None:
            name = self._scram.client_first(data)
            self.username = self._name(name)
            self._authzid(self._scram.authzid)
            self._stage = "keys"
            return NeedKeys(self.username, self._scram.mechanism)
        if stage == "final" and self._scram is not None:
            self._scram.parse_final(data)
            self._stage = "proof"
            return CheckProof(self.username)
        if stage == "server-final":
            if data:
                raise _Fail("malformed")
            return self._end(Success(self.username))
        raise _Fail("malformed")  # a message while the directory is being asked

    def _plain(self, data: bytes) -> Step:
        parts = data.split(b"\0")  # RFC 4616 §2: [authzid] NUL authcid NUL passwd
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise _Fail("malformed")
        authzid = parts[0].decode("utf-8", "strict") if _valid_utf8(parts[0]) else None
        if authzid is None:
            raise _Fail("malformed")
        self._login_user = self._name(_utf8(parts[1]))
        self._authzid(authzid)
        return self._password(_utf8(parts[2]))

    def _password(self, password: str) -> Step:
        self.username = self._login_user
        self._stage = "verdict"
        return CheckPassword(self.username, password)

    def _name(self, name: str) -> str:
        try:
            prepared = self._prepare(name)
        except ValueError:
            raise _Fail("not-authorized") from None
        if not prepared:
            raise _Fail("not-authorized")
        return prepared

    def _authzid(self, authzid: str) -> None:
        """Only the user's own identity (or none) may be requested (RFC 4422 §3.4.1)."""
        if not authzid:
            return
        try:
            if self._prepare(authzid) == (self.username or self._login_user):
                self.authzid = authzid
                return
        except ValueError:
            pass
        raise _Fail("invalid-authzid")

    # -- directory answers ----------------------------------------------------------------

    def verdict(self, ok: bool, temporary: bool = False) -> Step:
        """The answer to CheckPassword."""
        if self._stage != "verdict":
            raise RuntimeError("no password check is pending")
        if ok:
            return self._end(Success(self.username))
        return self._end(Failure("temporary" if temporary else "not-authorized"))

    def keys(self, keys: ScramKeys) -> Step:
        """The answer to NeedKeys: the user's keys, or the fake keys of an unknown name."""
        if self._stage != "keys" or self._scram is None:
            raise RuntimeError("no key lookup is pending")
        if keys.mechanism != self._scram.mechanism:
            raise ValueError(f"keys are for {keys.mechanism}, exchange is {self.mechanism}")
        self._stage = "final"
        return Challenge(self._scram.server_first(keys))

    def check_proof(self) -> bool:
        """Verify the client's proof (pure); the authenticator calls it only when the
        lockout allows a check."""
        if self._stage != "proof" or self._scram is None:
            raise RuntimeError("no proof is pending")
        final = self._scram.verify()
        if final is None:
            return False
        self._server_final = final
        return True

    def proof_result(self, ok: bool, temporary: bool = False) -> Step:
        """The answer to CheckProof: `ok` only if the proof held AND the account may log in."""
        if self._stage != "proof":
            raise RuntimeError("no proof check is pending")
        if not ok or not self._server_final:
            return self._end(Failure("temporary" if temporary else "not-authorized"))
        if self._final_in_challenge:
            self._stage = "server-final"
            return Challenge(self._server_final)
        return self._end(Success(self.username, self._server_final))

    def fail(self, condition: str) -> Step:
        """End the exchange from outside (e.g. the directory is down: ``temporary``)."""
        return self._end(Failure(condition))

    def _end(self, step: Success | Failure) -> Step:
        self._stage = "done"
        return step


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\r" not in data and b"\n" not in data


def _scram_condition(code: str) -> str:
    if code in ("invalid-proof", "channel-bindings-dont-match", "unknown-user"):
        return "not-authorized"
    if code in ("invalid-username-encoding",):
        return "not-authorized"
    return "malformed"


def mechanism_keys(mechanism: str) -> str:
    """The stored-key family a mechanism uses (``-PLUS`` shares its base's keys)."""
    return base_mechanism(mechanism)
