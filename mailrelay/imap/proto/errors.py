"""The one exception the IMAP parser raises, carrying the reply it deserves."""

from __future__ import annotations


class ParseError(Exception):
    """Malformed client input: answered with tagged BAD (untagged if no tag).

    ``code`` is an optional response code such as ``"TOOBIG"`` (RFC 7888 §4),
    ``status`` is ``"BAD"`` or ``"NO"``.
    """

    def __init__(
        self, text: str, tag: str | None = None, code: str | None = None, status: str = "BAD"
    ) -> None:
        super().__init__(text)
        self.text = text
        self.tag = tag
        self.code = code
        self.status = status
