-- Multi-user chat (XEP-0045) at conference.<domain>: persistent rooms, their
-- affiliations and recent history. Occupants and roles live in memory only.

create table xmpp_muc_room (
    jid          text primary key,            -- room bare JID
    unit         text,                        -- unit code: a unit room kept in sync with the directory
    config       jsonb not null,
    subject      text not null default '',
    subject_nick text not null default '',
    created_at   timestamptz not null default now()
);

create table xmpp_muc_affiliation (
    room        text not null references xmpp_muc_room(jid) on delete cascade,
    jid         text not null,                -- bare JID
    affiliation text not null check (affiliation in ('owner', 'admin', 'member', 'outcast')),
    managed     boolean not null default false, -- granted by the directory (unit rooms)
    primary key (room, jid)
);

-- The last messages of each room (history on join, XEP-0045 §7.2.15), trimmed to the
-- room's history length; the archive proper is MAM's business.
create table xmpp_muc_history (
    id        bigserial primary key,
    room      text not null references xmpp_muc_room(jid) on delete cascade,
    stanza_id text not null,                  -- XEP-0359 id given by the room
    nick      text not null,
    sender    text not null,                  -- real bare JID
    stanza    text not null,
    stamp     timestamptz not null default now()
);
create index xmpp_muc_history_room_idx on xmpp_muc_history(room, id);
