-- Directory: units, accounts, SCRAM credentials, aliases.
create table units (
    id          serial primary key,
    code        text not null unique check (code ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name        text not null check (length(btrim(name)) between 1 and 200),
    parent_id   int references units(id) on delete restrict,
    kind        text not null default 'city' check (kind in ('city', 'township')),
    created_at  timestamptz not null default now()
);

create table accounts (
    id            serial primary key,
    address       text not null unique,            -- lower-case local@domain
    display_name  text not null check (length(btrim(display_name)) between 1 and 200),
    unit_id       int not null references units(id) on delete restrict,
    title         text not null default '',
    roles         text[] not null default '{staff}',
    status        text not null default 'active' check (status in ('active', 'disabled')),
    quota_bytes   bigint not null default 1073741824,
    failed_logins int not null default 0,
    locked_until  timestamptz,
    last_login    timestamptz,
    created_at    timestamptz not null default now()
);
create index accounts_unit_idx on accounts(unit_id);

create table credentials (
    account_id  int not null references accounts(id) on delete cascade,
    mechanism   text not null check (mechanism in ('SCRAM-SHA-1', 'SCRAM-SHA-256')),
    salt        bytea not null,
    iterations  int not null,
    stored_key  bytea not null,
    server_key  bytea not null,
    updated_at  timestamptz not null default now(),
    primary key (account_id, mechanism)
);

-- An alias address expands to one or more target addresses (local accounts or outside).
create table aliases (
    address     text not null,
    target      text not null,
    created_at  timestamptz not null default now(),
    primary key (address, target)
);
create index aliases_target_idx on aliases(target);

-- Directory changes, for listeners that keep derived state (XMPP rosters, unit rooms).
create or replace function directory_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('directory_changed', tg_table_name);
    return null;
end $$;
create trigger units_changed after insert or update or delete on units
    for each statement execute function directory_notify();
create trigger accounts_changed after insert or update of unit_id, display_name, title, roles, status, address or delete on accounts
    for each statement execute function directory_notify();
