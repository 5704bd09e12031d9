"""Multi-user chat (XEP-0045) at ``conference.<domain>``, as a package (Prosody
``plugins/muc/``): ``config`` (muc#roomconfig values and form), ``room`` (one room's pure
rules: presence, messages, roles, affiliations, history, invitations, voice requests),
``admin`` (muc#admin, muc#owner, room disco), ``service`` (the component: dispatch,
fan-out, unit rooms from the directory, write-behind persistence), ``repo`` (SQL).

Extension points: fires ``muc/message`` (``service.MucMessage``) on the bus for every
groupchat message a room broadcasts; lists itself through the ``disco/host/items`` hook;
fires ``muc/room/purged`` (the room JID) when an ad-hoc room holding a unit's address is
closed for the unit's room (the archive forgets it).
Listens to ``session/closed``, ``session/remote/closed`` (xmpp.cluster), ``cluster/home``
(this node took the rooms over: reload from PostgreSQL) and unavailable ``presence/broadcast`` (occupants leave)
and to directory changes (unit rooms).
"""

from __future__ import annotations

from ...host import Host
from .service import MucService


def register(host: Host) -> MucService:
    svc = MucService(host, host.stores.muc)
    host.router.components[svc.domain] = svc.handle
    host.bus.on("session/closed", svc.on_closed, priority=10)
    host.bus.on("session/remote/closed", svc.on_closed)  # a session on another node (issue 14)
    host.bus.on("cluster/home", svc.on_home)  # this node became the rooms' home
    host.bus.on("presence/broadcast", svc.on_broadcast, priority=10)
    host.directory.listeners.append(svc.on_directory)
    host.on_start(svc.start)
    host.on_stop(svc.stop)
    host.hooks.on("disco/host/items", svc.host_items)
    host.bus.on("muc/archive/allowed", svc.archive_allowed)  # asked by the archive (MAM)
    return svc
