-- Sieve scripts per account (RFC 5228; edited over ManageSieve, RFC 5804) and the vacation
-- history that limits auto-replies to one per sender per :days (RFC 5230 §4.2).
create table sieve_scripts (
    account_id  bigint not null references accounts(id) on delete cascade,
    name        text not null,
    content     text not null,
    active      boolean not null default false,
    updated_at  timestamptz not null default now(),
    primary key (account_id, name)
);
-- RFC 5804 §1.1: at most one active script per user
create unique index sieve_scripts_one_active on sieve_scripts(account_id) where active;

create table sieve_vacation_sent (
    account_id  bigint not null references accounts(id) on delete cascade,
    sender      text not null,
    handle      text not null,
    sent_at     timestamptz not null,
    primary key (account_id, sender, handle)
);
