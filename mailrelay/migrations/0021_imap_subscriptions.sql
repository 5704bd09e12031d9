-- IMAP subscriptions in a table of their own (issue 18), independent of mailboxes:
-- RFC 3501 §6.3.6 forbids removing a name from the subscription list because the
-- mailbox went away, and a subscribed name may not exist (LIST \NonExistent, RFC 5258).
create table if not exists imap_subscriptions (
    account_id  int not null references accounts(id) on delete cascade,
    name        text not null,
    primary key (account_id, name)
);
insert into imap_subscriptions(account_id, name)
    select account_id, name from mailboxes where subscribed
    on conflict do nothing;
-- mailboxes.subscribed is no longer read; new mailboxes are not subscribed by CREATE
alter table mailboxes alter column subscribed set default false;

-- A new account's standard folders (0001 mail_create_folders) start subscribed.
create or replace function imap_subscribe_folders() returns trigger language plpgsql as $$
begin
    insert into imap_subscriptions(account_id, name)
        select new.id, n from unnest(array['INBOX', 'Sent', 'Drafts', 'Trash', 'Junk',
                                           'Archive']) n
        on conflict do nothing;
    return null;
end $$;
drop trigger if exists imap_subscribe_folders on accounts;
create trigger imap_subscribe_folders after insert on accounts
    for each row execute function imap_subscribe_folders();
