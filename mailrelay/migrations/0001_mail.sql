-- Mail: stored messages (once), the durable queue (a row per recipient), mailboxes (IMAP).

-- A message body is stored once and referenced by queue rows and mailbox entries alike:
-- a circular to 2,700 people writes its bytes once.
create table messages (
    id          bigserial primary key,
    raw         bytea not null,
    size        int not null,
    structure   jsonb,               -- MIME structure parsed once (ENVELOPE, BODYSTRUCTURE, offsets)
    created_at  timestamptz not null default now()
);

-- One row per (message, recipient) still to deliver. Rows leave the queue when done; the
-- outcome is kept in `deliveries`.
create table queue (
    id            bigserial primary key,
    queue_id      text not null,                -- shared by the recipients of one submission
    message_id    bigint not null references messages(id),
    sender        text not null,                -- '' is the null reverse-path (bounces)
    recipient     text not null,
    orig_rcpt     text,
    domain        text not null,                -- destination domain, or '' for local
    transport     text not null check (transport in ('local', 'remote', 'docs')),
    state         text not null default 'ready' check (state in ('ready', 'active', 'held')),
    attempts      int not null default 0,
    next_attempt  timestamptz not null default now(),
    lease_owner   text,
    lease_until   timestamptz,
    last_error    text,
    delay_notified boolean not null default false,
    envid         text,
    notify        text,                          -- DSN NOTIFY (RFC 3461), e.g. 'FAILURE,DELAY'
    ret           text,                          -- FULL | HDRS
    created_at    timestamptz not null default now()
);
create index queue_due_idx on queue(next_attempt) where state = 'ready';
create index queue_qid_idx on queue(queue_id);
create index queue_lease_idx on queue(lease_until) where state = 'active';

-- The outcome of every recipient (delivered, bounced, deleted), for tracking and `queue show`.
create table deliveries (
    id          bigserial primary key,
    queue_id    text not null,
    message_id  bigint not null,
    sender      text not null,
    recipient   text not null,
    status      text not null check (status in ('delivered', 'bounced', 'deleted', 'expanded')),
    detail      text not null default '',
    attempts    int not null default 0,
    at          timestamptz not null default now()
);
create index deliveries_qid_idx on deliveries(queue_id);

create table mailboxes (
    id             bigserial primary key,
    account_id     int not null references accounts(id) on delete cascade,
    name           text not null,                -- UTF-8 name with '/' as hierarchy separator
    special_use    text,                         -- \Sent \Drafts \Trash \Junk \Archive
    uidvalidity    bigint not null default (extract(epoch from clock_timestamp())::bigint),
    uidnext        bigint not null default 1,
    highestmodseq  bigint not null default 1,
    subscribed     boolean not null default true,
    created_at     timestamptz not null default now(),
    unique (account_id, name)
);

create table mailbox_messages (
    mailbox_id    bigint not null references mailboxes(id) on delete cascade,
    uid           bigint not null,
    message_id    bigint not null references messages(id),
    flags         text[] not null default '{}',
    modseq        bigint not null,
    internaldate  timestamptz not null default now(),
    size          int not null,
    primary key (mailbox_id, uid)
);
create index mailbox_messages_msg_idx on mailbox_messages(message_id);

-- Expunged UIDs with the modseq of their removal (QRESYNC VANISHED, RFC 7162 §3.2.10).
create table mailbox_expunged (
    mailbox_id  bigint not null references mailboxes(id) on delete cascade,
    uid         bigint not null,
    modseq      bigint not null,
    primary key (mailbox_id, uid)
);

-- Bytes used per account (quota), kept in step with mailbox_messages by the store.
create table mail_usage (
    account_id  int primary key references accounts(id) on delete cascade,
    bytes       bigint not null default 0,
    messages    bigint not null default 0
);

-- Every account gets the standard folders (RFC 6154 special-use) when it is created.
create or replace function mail_create_folders() returns trigger language plpgsql as $$
begin
    insert into mailboxes(account_id, name, special_use) values
        (new.id, 'INBOX', null), (new.id, 'Sent', '\Sent'), (new.id, 'Drafts', '\Drafts'),
        (new.id, 'Trash', '\Trash'), (new.id, 'Junk', '\Junk'), (new.id, 'Archive', '\Archive');
    insert into mail_usage(account_id) values (new.id);
    return null;
end $$;
create trigger accounts_mail_folders after insert on accounts
    for each row execute function mail_create_folders();

-- Accounts that existed before this migration get their folders too.
insert into mailboxes(account_id, name, special_use)
    select a.id, f.name, f.su from accounts a,
        (values ('INBOX', null), ('Sent', '\Sent'), ('Drafts', '\Drafts'), ('Trash', '\Trash'),
                ('Junk', '\Junk'), ('Archive', '\Archive')) as f(name, su)
    on conflict do nothing;
insert into mail_usage(account_id) select id from accounts on conflict do nothing;
