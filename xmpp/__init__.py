"""XMPP server: sans-IO stream core, c2s sessions, router and one module per feature."""
