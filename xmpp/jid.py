"""XMPP addresses (RFC 7622) with a stdlib approximation of the PRECIS profiles.

``JID.parse(text)`` splits and normalises; ``str(jid)`` gives the canonical form, so
``JID.parse(str(j)) == j`` for every valid `j`. Differences from full PRECIS (RFC 8264/8265)
are deliberate simplifications: the bidi rule and the contextual rules (CONTEXTJ/CONTEXTO)
are not checked, Unicode general categories stand in for the derived property tables, and
domain labels are checked with the stdlib IDNA 2003 ``nameprep``/``ToASCII``.
"""

from __future__ import annotations

import ipaddress
import unicodedata
from dataclasses import dataclass
from encodings import idna
from functools import lru_cache

#: RFC 7622 §3.2, §3.3, §3.4: each part is at most 1023 octets once UTF-8 encoded.
MAX_PART_BYTES = 1023

#: RFC 7622 §3.3.1: characters additionally forbidden in a localpart.
LOCAL_FORBIDDEN = frozenset("\"&'/:<>@")

_LDH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
# Letters, marks and digits: the non-ASCII part of the PRECIS IdentifierClass (RFC 8264 §4.2).
_IDENTIFIER_CATEGORIES = frozenset({"Ll", "Lu", "Lt", "Lm", "Lo", "Mn", "Mc", "Nd"})
# Controls, format/ignorable, surrogates, private use, unassigned: never allowed.
_FREEFORM_DISALLOWED = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


class JIDError(ValueError):
    """The text is not a valid JID; the stanza error to answer is ``jid-malformed``."""


def _check_length(part: str, what: str) -> None:
    if not part:
        raise JIDError(f"empty {what}")
    if len(part) * 4 > MAX_PART_BYTES and len(part.encode("utf-8")) > MAX_PART_BYTES:
        raise JIDError(f"{what} longer than {MAX_PART_BYTES} octets")


def _width_map(text: str) -> str:
    # RFC 8265 §3.3.2 rule 1: map fullwidth and halfwidth characters to their decomposition.
    out = []
    for ch in text:
        decomposition = unicodedata.decomposition(ch)
        if decomposition.startswith(("<wide>", "<narrow>")):
            ch = unicodedata.normalize("NFKC", ch)
        out.append(ch)
    return "".join(out)


def nodeprep(local: str) -> str:
    """Normalise a localpart: UsernameCaseMapped profile (RFC 7622 §3.3, RFC 8265 §3.3)."""
    if local.isascii():
        out = local.lower()
        for ch in out:
            if ch in LOCAL_FORBIDDEN or not ("!" <= ch <= "~"):
                raise JIDError(f"character {ch!r} not allowed in a localpart")
    else:
        out = unicodedata.normalize("NFC", _width_map(local).lower())
        for ch in out:
            if ch.isascii():
                if ch in LOCAL_FORBIDDEN or not ("!" <= ch <= "~"):
                    raise JIDError(f"character {ch!r} not allowed in a localpart")
            elif (unicodedata.category(ch) not in _IDENTIFIER_CATEGORIES
                  or unicodedata.normalize("NFKC", ch) != ch):
                raise JIDError(f"character {ch!r} not allowed in a localpart")
    _check_length(out, "localpart")
    return out


def resourceprep(resource: str) -> str:
    """Normalise a resourcepart: OpaqueString profile (RFC 7622 §3.4, RFC 8265 §4.2)."""
    if resource.isascii():
        for ch in resource:
            if not (" " <= ch <= "~"):
                raise JIDError(f"character {ch!r} not allowed in a resourcepart")
        out = resource
    else:
        mapped = "".join(" " if unicodedata.category(ch) == "Zs" else ch for ch in resource)
        out = unicodedata.normalize("NFC", mapped)
        for ch in out:
            if unicodedata.category(ch) in _FREEFORM_DISALLOWED:
                raise JIDError(f"character {ch!r} not allowed in a resourcepart")
    _check_length(out, "resourcepart")
    return out


def nameprep(domain: str) -> str:
    """Normalise a domainpart (RFC 7622 §3.2): lower case, U-labels, no final dot."""
    if domain.endswith("."):
        domain = domain[:-1]  # RFC 7622 §3.2: a trailing label separator MUST be stripped
    if domain.startswith("[") and domain.endswith("]"):
        try:
            return "[" + ipaddress.IPv6Address(domain[1:-1]).compressed + "]"
        except ValueError:
            raise JIDError("invalid IPv6 literal") from None
    _check_length(domain, "domainpart")
    labels = []
    for label in domain.lower().split("."):
        if not label.isascii():
            try:
                label = idna.nameprep(label)
                idna.ToASCII(label)  # label length and prohibited characters (RFC 3490)
            except UnicodeError:
                raise JIDError("invalid internationalised domain label") from None
            label = unicodedata.normalize("NFC", label)
            if not label or any(ch.isascii() and ch not in _LDH for ch in label):
                raise JIDError("invalid domain label")
        elif (not label or len(label) > 63 or label[0] == "-" or label[-1] == "-"
              or not _LDH.issuperset(label)):
            raise JIDError(f"invalid domain label {label!r}")
        labels.append(label)
    out = ".".join(labels)
    _check_length(out, "domainpart")
    return out


@dataclass(frozen=True, slots=True)
class JID:
    """A normalised JID; `local` and `resource` are "" when absent."""

    local: str
    domain: str
    resource: str = ""

    def __str__(self) -> str:
        text = f"{self.local}@{self.domain}" if self.local else self.domain
        return f"{text}/{self.resource}" if self.resource else text

    @property
    def bare(self) -> JID:
        """The JID without its resource."""
        return JID(self.local, self.domain) if self.resource else self

    @property
    def is_bare(self) -> bool:
        return not self.resource

    def with_resource(self, resource: str) -> JID:
        """The full JID for `resource` (normalised with resourceprep)."""
        return JID(self.local, self.domain, resourceprep(resource))

    @classmethod
    def parse(cls, text: str) -> JID:
        """Split and normalise (RFC 7622 §3.1); raises JIDError."""
        return _parse(text)

    @classmethod
    def make(cls, local: str, domain: str, resource: str = "") -> JID:
        """Build from parts, normalising each one; raises JIDError."""
        return JID(nodeprep(local) if local else "", nameprep(domain),
                   resourceprep(resource) if resource else "")


@lru_cache(maxsize=16384)
def _parse(text: str) -> JID:
    # RFC 7622 §3.1: the resourcepart starts at the first "/", the localpart ends at the
    # first "@" before it.
    if len(text) > 3 * MAX_PART_BYTES + 2:
        raise JIDError("JID too long")
    rest, slash, resource = text.partition("/")
    if slash and not resource:
        raise JIDError("empty resourcepart")
    local, at, domain = rest.partition("@")
    if not at:
        local, domain = "", rest
    elif not local:
        raise JIDError("empty localpart")
    return JID(nodeprep(local) if local else "", nameprep(domain),
               resourceprep(resource) if resource else "")


def parse_jid(text: str) -> JID:
    """Same as ``JID.parse``."""
    return _parse(text)
