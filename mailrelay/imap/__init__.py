"""IMAP4rev1 server (RFC 3501 + extensions).

``imap.proto`` is the sans-IO core (bytes in, typed commands out, responses to
bytes); ``imap.store_api`` is the typed boundary to the mail store; the
``search``, ``fetch`` and ``view`` modules are pure execution helpers.
"""
