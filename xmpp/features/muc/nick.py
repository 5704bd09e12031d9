"""Room nicknames: the PRECIS Nickname profile (RFC 8266) and a look-alike check.

``prepare`` enforces the profile (RFC 8266 §2.2, on the FreeformClass of RFC 8264 §4.3):
non-ASCII spaces become U+0020, leading and trailing spaces go and runs of spaces become
one (additional mapping rule); NFKC, which also maps fullwidth and halfwidth forms to
their ordinary ones (normalisation rule, width mapping); the rules are applied again until
the result is stable (§2.2: enforcement is idempotent). Refused (``NickError``): an empty
result, control characters (Cc), format characters (Cf: zero-width joiners, bidi
overrides, soft hyphen — default ignorable code points), unassigned code points (Cn),
surrogates (Cs), private use (Co), line/paragraph separators (Zl, Zp), noncharacters, and
a nick longer than 64 characters or 1023 UTF-8 bytes (a JID resourcepart, RFC 7622 §3.4).
``compare_key`` is the profile's comparison form (§2.4: enforcement, then toLowerCase,
then NFKC again): two nicks with one key are the same nick.

``skeleton`` goes further, in the spirit of UTS #39's skeleton but on a small table we own:
NFKC, case folding, and a map of look-alikes to one Latin letter — Cyrillic and Greek
letters that render like Latin ones (``о``→``o``, ``а``→``a``, ``ρ``→``p``, ``Ν``→``n``,
capitals such as ``В``/``Н``/``Т`` that look like B/H/T, …; about 70 code points), the digits ``0``/``1`` and ``I``/``|`` (``o``/``l``), and the
pairs ``rn``→``m``, ``vv``→``w``. Two different people whose nicks share a skeleton may not
be in one room together (``bоb`` with a Cyrillic о is refused while ``bob`` is there).
Not covered: scripts beyond Latin/Cyrillic/Greek (e.g. Armenian ``օ``, Cherokee), accented
letters versus plain ones (``bób`` is not ``bob``), whole-script confusables between two
non-Latin nicks, and font-dependent shapes.
"""

from __future__ import annotations

import unicodedata

MAX_CHARS = 64
MAX_BYTES = 1023
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cn", "Cs", "Co", "Zl", "Zp"})

# Look-alikes → Latin (lower case; applied after case folding, and before it for the few
# capitals that fold to something else). Cyrillic first, then Greek.
_LOOKALIKE = {
    # Cyrillic lower case (only letters shaped like a Latin lower-case letter)
    "а": "a", "е": "e", "ё": "ë", "һ": "h", "і": "i", "ј": "j", "к": "k", "о": "o",
    "р": "p", "с": "c", "ѕ": "s", "у": "y", "х": "x", "ԁ": "d", "ԛ": "q", "ԝ": "w",
    "ӏ": "l", "ү": "y", "ɡ": "g",
    # Greek lower case
    "α": "a", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "υ": "u",
    "χ": "x", "ω": "w", "γ": "y", "ϲ": "c", "ϳ": "j",
    # digits and ASCII
    "0": "o", "1": "l", "|": "l",
}
_BEFORE_FOLD = {
    # Capitals whose folded form would not look like their Latin twin's folded form.
    "I": "l", "Ι": "l", "І": "l", "Ӏ": "l",   # Latin I, Greek Iota, Cyrillic І/Ӏ vs l
    "В": "b", "Β": "b",                       # Cyrillic Ve / Greek Beta: B, not в/β
    "Н": "h", "Η": "h",                       # Cyrillic En / Greek Eta: H
    "М": "m", "Μ": "m", "Ν": "n", "Κ": "k", "К": "k",
    "Т": "t", "Τ": "t", "Р": "p", "Ρ": "p", "С": "c", "Ϲ": "c",
    "Х": "x", "Χ": "x", "У": "y", "Υ": "y", "Ζ": "z", "Α": "a", "А": "a",
    "Ε": "e", "Е": "e", "Ο": "o", "О": "o", "Ѕ": "s", "Ј": "j",
}
_PAIRS = (("rn", "m"), ("vv", "w"))


class NickError(ValueError):
    """The nickname is refused by the profile (the message says why)."""


def _is_noncharacter(cp: int) -> bool:
    return 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE


def _enforce_once(nick: str) -> str:
    # RFC 8266 §2.2 (1) additional mapping: non-ASCII spaces to SPACE, trim, collapse.
    mapped = "".join(" " if unicodedata.category(ch) == "Zs" else ch for ch in nick)
    mapped = " ".join(mapped.split(" "))
    mapped = " ".join(part for part in mapped.split(" ") if part)
    # (3) normalisation: NFKC (width mapping included).
    return unicodedata.normalize("NFKC", mapped)


def prepare(nick: str) -> str:
    """The nickname as enforced by RFC 8266 (case preserved); raises NickError."""
    out = nick
    for _ in range(4):  # RFC 8266 §2.2: until stable (NFKC can expose new spaces)
        nxt = _enforce_once(out)
        if nxt == out:
            break
        out = nxt
    else:  # pragma: no cover - NFKC settles in two rounds
        raise NickError("The nickname does not settle")
    if not out:
        raise NickError("A nickname is required")
    for ch in out:
        cp = ord(ch)
        # RFC 8264 §4.3 FreeformClass: controls, ignorables, unassigned are disallowed.
        if unicodedata.category(ch) in _REFUSED_CATEGORIES or _is_noncharacter(cp):
            raise NickError(f"Character U+{cp:04X} is not allowed in a nickname")
    if len(out) > MAX_CHARS or len(out.encode("utf-8")) > MAX_BYTES:
        raise NickError("The nickname is too long")
    return out


def compare_key(nick: str) -> str:
    """RFC 8266 §2.4: two nicks are the same when these keys are equal."""
    return unicodedata.normalize("NFKC", prepare(nick).lower())


def skeleton(nick: str) -> str:
    """A look-alike key (see the module docstring); equal skeletons look the same."""
    text = unicodedata.normalize("NFKC", nick)
    text = "".join(_BEFORE_FOLD.get(ch, ch) for ch in text).casefold()
    text = "".join(_LOOKALIKE.get(ch, ch) for ch in text)
    for pair, single in _PAIRS:
        text = text.replace(pair, single)
    return text
