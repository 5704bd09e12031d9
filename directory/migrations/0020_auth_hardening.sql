-- One authentication layer (issue #12): a server secret for fake SCRAM keys, the lockout
-- counter per login NAME (known or not: equal writes for every name), and the per-IP
-- failure penalty. Counters are UNLOGGED: losing them in a crash only forgets failures.

-- Server secrets, made once and shared by every node (fake keys stay stable across
-- restarts and nodes: a prober sees the same salt for the same unknown name).
create table auth_secrets (
    name        text primary key,
    secret      bytea not null check (length(secret) >= 32),
    created_at  timestamptz not null default now()
);

-- Attempts per login name in the current window. One statement counts an attempt and
-- says whether the password may be checked (directory.repo.count_attempt).
create unlogged table auth_attempts (
    name          text primary key,
    window_start  timestamptz not null,
    attempts      int not null,
    locked_until  timestamptz            -- set once attempts exceed the allowance (for `user show`)
);
create index auth_attempts_window_idx on auth_attempts(window_start);

-- Failed logins per client network (an IPv4 address or an IPv6 /64): the delay before the
-- next attempt from there grows with them (Dovecot's auth penalty).
create unlogged table auth_penalty (
    ip            text primary key,
    failures      int not null,
    last_failure  timestamptz not null
);
create index auth_penalty_last_idx on auth_penalty(last_failure);
