-- XMPP: personal roster items, pending subscription requests, roster versions, offline
-- messages, private XML storage, blocking lists, last activity, vCard avatars.
-- JIDs are stored as normalised bare JID strings ("local@domain").

create table xmpp_roster (
    owner        text not null,
    contact      text not null,
    name         text not null default '',
    subscription text not null default 'none' check (subscription in ('none', 'to', 'from', 'both')),
    ask          boolean not null default false,    -- outbound subscribe pending (RFC 6121 §3.1.2)
    groups       text[] not null default '{}',
    primary key (owner, contact)
);

-- Inbound subscription requests not yet answered (RFC 6121 §3.1.3: stored and delivered
-- when the contact comes online); not roster items until approved.
create table xmpp_sub_request (
    owner      text not null,
    contact    text not null,
    status     text not null default '',
    created_at timestamptz not null default now(),
    primary key (owner, contact)
);

create table xmpp_roster_version (
    owner   text primary key,
    version bigint not null default 0
);

create table xmpp_offline (
    id      bigserial primary key,
    owner   text not null,
    stanza  text not null,
    stamp   timestamptz not null default now()
);
create index xmpp_offline_owner_idx on xmpp_offline(owner, id);

create table xmpp_private (
    owner     text not null,
    namespace text not null,
    xml       text not null,
    primary key (owner, namespace)
);

create table xmpp_blocklist (
    owner text not null,
    jid   text not null,
    primary key (owner, jid)
);

create table xmpp_last (
    owner  text primary key,
    seen   timestamptz not null,
    status text not null default ''
);

create table xmpp_avatar (
    owner      text primary key,
    mime_type  text not null,
    data       bytea not null,
    sha1       text not null,
    updated_at timestamptz not null default now()
);
