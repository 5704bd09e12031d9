"""POP3 (RFC 1939) for clients that default to it (Foxmail, older Outlook, fetchmail setups).

``proto`` is the sans-IO core (commands, states, bounds, the session's maildrop snapshot),
``repo`` reads the INBOX, ``server`` is the asyncio driver. POP3 sees the INBOX only;
its deletions are IMAP expunges, so IMAP clients of the same account see them.
"""
