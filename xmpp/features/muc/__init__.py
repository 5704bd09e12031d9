"""Multi-user chat (XEP-0045) at ``conference.<domain>``, as a package (Prosody
``plugins/muc/``): ``config`` (muc#roomconfig values and form), ``room`` (one room's pure
rules: presence, messages, roles, affiliations, history, invitations, voice requests),
``admin`` (muc#admin, muc#owner, room disco), ``service`` (the component: dispatch,
fan-out, unit rooms from the directory, write-behind persistence), ``repo`` (SQL).

Extension points: calls the ``muc/message`` sync hook (``service.MucMessage``) for every
groupchat message a room broadcasts; fires ``muc/room/iq`` (``service.RoomIq``) on the bus
for an iq to a room it does not serve (MAM queries); lists itself through the
``disco/host/items`` hook;
fires ``muc/room/purged`` (the room JID) when an ad-hoc room holding a unit's address is
closed for the unit's room (the archive forgets it).
Listens to ``session/closed``, ``session/remote/closed`` (xmpp.cluster),
``cluster/room/home`` (this node became a room's home: the room and its occupants come
from PostgreSQL), ``cluster/room/lost``, unavailable ``presence/broadcast`` (occupants leave)
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
    host.bus.on("cluster/room/home", svc.on_room_home)  # this node became a room's home
    host.bus.on("cluster/room/lost", svc.on_room_lost)  # another node took a room over
    host.bus.on("presence/broadcast", svc.on_broadcast, priority=10)
    host.directory.listeners.append(svc.on_directory)
    host.on_start(svc.start)
    host.on_stop(svc.stop)
    host.hooks.on("disco/host/items", svc.host_items)
    host.bus.on("muc/archive/allowed", svc.archive_allowed)  # asked by the archive (MAM)
    return svc
