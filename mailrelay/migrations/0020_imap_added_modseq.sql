-- IMAP view convergence (issue 18): a changed row is reported to a session either as an
-- arrival or as a flag change, never both. ``added_modseq`` is the MODSEQ at which the
-- row entered its mailbox: changes_since(m) reports rows with added_modseq > m as new.
alter table mailbox_messages add column if not exists added_modseq bigint;
update mailbox_messages set added_modseq = modseq where added_modseq is null;
alter table mailbox_messages alter column added_modseq set not null;

-- Every writer (APPEND, COPY, MOVE, local delivery, INBOX rename) gets it right without
-- knowing about it: the MODSEQ a row is inserted (or moved into a mailbox) with.
create or replace function mailbox_messages_added_modseq() returns trigger
language plpgsql as $$
begin
    if tg_op = 'INSERT' or new.mailbox_id <> old.mailbox_id then
        new.added_modseq := new.modseq;
    end if;
    return new;
end $$;
drop trigger if exists mailbox_messages_added_modseq on mailbox_messages;
create trigger mailbox_messages_added_modseq before insert or update of mailbox_id
    on mailbox_messages for each row execute function mailbox_messages_added_modseq();
