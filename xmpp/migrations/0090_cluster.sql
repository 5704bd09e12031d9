-- Issue 14: XMPP across nodes on one PostgreSQL.
-- Every bound resource is a row owned by its node (directory `nodes`); survivors delete
-- the rows of a dead node. The hand-off table carries stanzas for another node that are
-- too large for a NOTIFY payload, and every message until the target node has delivered
-- it (a target that died leaves its rows to the survivors: offline storage, not loss).
create table xmpp_sessions (
    full_jid  text primary key,
    bare      text not null,
    node_id   text not null,
    priority  smallint not null default 0,
    available boolean not null default false,
    presence  text,
    csi       text not null default 'active',
    shared    text not null default '{}',   -- JSON: per-session feature state others need
    bound_at  timestamptz not null default clock_timestamp()
);
create index xmpp_sessions_node on xmpp_sessions (node_id);
create index xmpp_sessions_bare on xmpp_sessions (bare);

create table xmpp_handoff (
    id        bigserial primary key,
    node_id   text not null,
    full_jid  text not null,
    stanza    bytea not null,
    created   timestamptz not null default now()
);
create index xmpp_handoff_node on xmpp_handoff (node_id, id);

-- One home node per service holding rooms (the MUC component): a lease owned by a node,
-- taken over by a survivor when the owner's heartbeat stops.
create table xmpp_homes (
    service  text primary key,
    node_id  text not null,
    since    timestamptz not null default now()
);
