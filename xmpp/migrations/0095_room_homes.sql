-- Issue 14 item 3: one home node per ROOM (was one per MUC service), occupancy in
-- PostgreSQL so that it survives its home node.
--
-- xmpp_room_homes: a lease per room, taken by the node that first receives a stanza for
-- the room (its first occupant's node) and by a survivor when the owner's heartbeat stops.
-- xmpp_muc_occupant: every occupant session of a room (full JID, nick, role, the node of
-- the session, its last presence to the room), written behind by the room's home; a new
-- home reads it and keeps the occupants whose sessions still live.
drop table if exists xmpp_homes;

create table xmpp_room_homes (
    room     text primary key,                 -- room bare JID
    node_id  text not null,
    since    timestamptz not null default now()
);
create index xmpp_room_homes_node on xmpp_room_homes (node_id);

create table xmpp_muc_occupant (
    room     text not null,                    -- room bare JID (temporary rooms too)
    full_jid text not null,                    -- the occupant's session
    nick     text not null,
    role     text not null check (role in ('moderator', 'participant', 'visitor')),
    node_id  text not null,                    -- the node holding that session
    presence text not null,                    -- its last presence to the room (XML)
    primary key (room, full_jid)
);
