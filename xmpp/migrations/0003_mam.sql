-- XMPP part 2: message archive (XEP-0313 MAM) for accounts and rooms, and archiving
-- preferences. `owner` is the archive's bare JID (an account, or a room at the MUC domain).
-- Rows are read newest-first by keyset pagination on `id` (never OFFSET): the public id
-- (XEP-0359 stanza-id, `stanza_id`) is looked up once, then every page is an index range.

create table xmpp_mam (
    id        bigserial primary key,
    owner     text not null,
    stanza_id text not null,             -- XEP-0359 <stanza-id by=owner id=...>
    with_jid  text not null,             -- bare JID of the other party (room: occupant nick JID)
    ts        timestamptz not null default now(),
    stanza    text not null,             -- serialised message (jabber:client default)
    unique (owner, stanza_id)            -- a resend or a second archiving attempt is a no-op
);
create index xmpp_mam_owner_idx on xmpp_mam(owner, id);
create index xmpp_mam_with_idx on xmpp_mam(owner, with_jid, id);
create index xmpp_mam_ts_idx on xmpp_mam(owner, ts);

-- XEP-0313 §7 preferences: default always | never | roster, plus always/never JID lists.
create table xmpp_mam_prefs (
    owner        text primary key,
    default_mode text not null default 'always' check (default_mode in ('always', 'never', 'roster')),
    always       text[] not null default '{}',
    never        text[] not null default '{}'
);
