"""The stores XMPP features persist to, given to them explicitly (issue 14 item 6).

``Stores.postgres(pool)`` is the one place the server builds them (``xmpp.service``);
``Host`` requires a ``Stores``, and no feature builds or falls back to a store of its own,
so a server cannot start on a silent in-memory store: on several nodes that would split
state per process. Unit tests pass in-memory doubles (``tests/xmpp_doubles.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .features.mam import MamStore
from .features.muc.repo import MucStore, MucStoreLike
from .features.pep.repo import PepRepo, PepStore
from .features.upload.repo import UploadStore
from .repo import XmppStore


@dataclass(frozen=True)
class Stores:
    xmpp: XmppStore          # roster, offline, private, blocklist, last, avatar
    pep: PepRepo             # XEP-0163 nodes and items
    muc: MucStoreLike        # XEP-0045 rooms and history
    mam: MamStore            # XEP-0313 archive and preferences
    #: XEP-0363 slots; None only where no database exists (unit tests): the upload
    #: service is then not offered at all (never advertised).
    upload: UploadStore | None

    @classmethod
    def postgres(cls, pool: Any) -> Stores:
        if pool is None:
            raise ValueError("XMPP stores need a PostgreSQL pool")
        return cls(XmppStore(pool), PepStore(pool), MucStore(pool), MamStore(pool),
                   UploadStore(pool))
