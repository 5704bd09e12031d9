"""One module per XMPP feature (Prosody ``mod_*``). Each has ``register(host)`` that hooks
its handlers on the EventBus / sync hooks and advertises its disco features.

Features never import each other; they meet at the extension points documented in
``xmpp.router``, ``xmpp.hooks`` and ``xmpp.events``.
"""

from __future__ import annotations

import importlib

from ..host import Host

#: Loaded in this order (disco last, so it sees every advertised feature).
DEFAULT = ("roster", "presence", "offline", "blocking", "carbons", "vcard", "ping",
           "version", "time", "last", "private", "search", "pep", "bookmarks", "avatar",
           "upload", "muc", "mam", "sm", "csi", "contact", "register", "disco")


def load(host: Host, names: tuple[str, ...] = DEFAULT) -> None:
    for name in names:
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(host)
