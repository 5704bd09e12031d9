"""MIME structure for IMAP: parse once at delivery, serve FETCH by slicing.

Public API::

    structure = parse_message(raw)          # JSON-serialisable dict, store it
    render_envelope(structure["env"])       # b'("date" "subject" ...)'
    render_bodystructure(structure["body"]) # BODYSTRUCTURE; extended=False for BODY
    section_bytes(raw, structure, "1.2.MIME", partial=(0, 100))

Store messages CRLF-normalised (:func:`normalize_crlf`) so sizes match RFC 3501.
"""

from .render import imap_nstring, imap_string, render_bodystructure, render_envelope
from .sections import Section, find_part, parse_section, section_bytes
from .structure import STRUCTURE_VERSION, normalize_crlf, parse_envelope, parse_message

__all__ = [
    "STRUCTURE_VERSION",
    "Section",
    "find_part",
    "imap_nstring",
    "imap_string",
    "normalize_crlf",
    "parse_envelope",
    "parse_message",
    "parse_section",
    "render_bodystructure",
    "render_envelope",
    "section_bytes",
]
