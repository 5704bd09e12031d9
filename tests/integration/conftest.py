"""Fixtures shared by the integration tests of this folder."""

from tests.integration.test_xmpp import xmpp  # noqa: F401  (the whole server, seeded users)
