-- Sessions of the self-service page /account (issue 15): one row per signed-in browser.
-- The cookie holds a random token; only its SHA-256 is stored. Shared by every node.
create table web_sessions (
    id          text primary key,              -- hex sha256 of the cookie token
    account_id  int not null references accounts(id) on delete cascade,
    csrf        text not null,                 -- per-session anti-CSRF token (form field)
    remote      text not null default '',
    created_at  timestamptz not null default now(),
    last_seen   timestamptz not null default now(),
    expires_at  timestamptz not null
);
create index web_sessions_account_idx on web_sessions(account_id);
