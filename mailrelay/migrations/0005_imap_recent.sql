-- IMAP \Recent (RFC 3501 §2.3.2) and garbage collection of unreferenced message bodies.

-- The first UID no session has yet claimed as \Recent. A SELECT (not EXAMINE) claims
-- [recent_uid, uidnext) and a selected session claims the new messages it is told about,
-- by advancing this watermark atomically: each message is \Recent in exactly one session.
alter table mailboxes add column if not exists recent_uid bigint not null default 1;
update mailboxes set recent_uid = uidnext;  -- what existed before is not recent

-- Claim [recent_uid, upto) for the calling session. Returns the first claimed UID, or
-- null when another session got there first. Losing the advance in a crash only makes
-- messages \Recent once more, so the commit need not wait for the WAL flush.
create or replace function imap_claim_recent(p_mailbox bigint, p_upto bigint)
returns bigint language plpgsql as $$
declare
    old bigint;
begin
    select recent_uid into old from mailboxes where id = p_mailbox for update;
    if old is null or old >= p_upto then
        return null;
    end if;
    update mailboxes set recent_uid = p_upto where id = p_mailbox;
    perform set_config('synchronous_commit', 'off', true);
    return old;
end $$;

-- Message bodies whose last mailbox entry went away (EXPUNGE, MOVE, mailbox or account
-- deletion) are candidates; a periodic sweep deletes those nothing else references.
create table if not exists message_gc (
    message_id bigint primary key
);

create or replace function mailbox_messages_gc() returns trigger language plpgsql as $$
begin
    insert into message_gc(message_id) select distinct message_id from gone
        on conflict do nothing;
    return null;
end $$;
create trigger mailbox_messages_gc after delete on mailbox_messages
    referencing old table as gone for each statement execute function mailbox_messages_gc();

-- The sweep's "is anything still using it" checks must not scan the delivery log.
create index if not exists deliveries_message_idx on deliveries(message_id);
