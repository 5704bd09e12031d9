-- The keyword list of each mailbox (issue 18), as Dovecot keeps one: every keyword ever
-- set on a message of the mailbox, in the order first used. SELECT's FLAGS and
-- PERMANENTFLAGS name them all, and every session of the mailbox learns a new one with
-- an untagged FLAGS before a FETCH shows it (RFC 3501 §7.2.6, §6.4.6), on any node.
-- The list only grows (a client may still hold messages with a keyword); it goes with
-- the mailbox row. ``keywords_modseq``: the MODSEQ at which it last grew, so
-- changes_since sends it only to sessions that have not seen it yet.
alter table mailboxes add column if not exists keywords text[] not null default '{}';
alter table mailboxes add column if not exists keywords_modseq bigint not null default 0;

update mailboxes m set keywords = k.kw
    from (select mm.mailbox_id, array_agg(distinct f order by f) as kw
          from mailbox_messages mm cross join unnest(mm.flags) as f
          where left(f, 1) <> '\' group by mm.mailbox_id) k
    where m.id = k.mailbox_id;

-- Every writer (STORE, APPEND, COPY, MOVE, Sieve delivery, INBOX rename) extends the
-- list without knowing about it: once per statement, from the rows it wrote. Keywords
-- compare case-insensitively (RFC 3501 §9: atoms are case-insensitive), so "$label1"
-- does not add a second entry next to "$Label1". The writers have locked the mailbox
-- row already (UIDs/MODSEQs are allocated there), so this update waits for nobody.
-- The bound (imap.max_keywords) is checked by the IMAP store before it writes; local
-- delivery is never refused for a keyword (a message must not be lost for a flag).
create or replace function mailbox_keywords_grow() returns trigger language plpgsql as $$
begin
    update mailboxes m
       set keywords = m.keywords || array(
               select x from unnest(k.kw) as x
               where lower(x) <> all (select lower(y) from unnest(m.keywords) as y)
               order by x),
           keywords_modseq = m.highestmodseq
      from (select n.mailbox_id, array_agg(distinct f) as kw
              from new_rows n cross join unnest(n.flags) as f
             where left(f, 1) <> '\' group by n.mailbox_id) k
     where m.id = k.mailbox_id
       and exists (select 1 from unnest(k.kw) as x
                   where lower(x) <> all (select lower(y) from unnest(m.keywords) as y));
    return null;
end $$;

drop trigger if exists mailbox_keywords_insert on mailbox_messages;
create trigger mailbox_keywords_insert after insert on mailbox_messages
    referencing new table as new_rows
    for each statement execute function mailbox_keywords_grow();
drop trigger if exists mailbox_keywords_update on mailbox_messages;
create trigger mailbox_keywords_update after update on mailbox_messages
    referencing new table as new_rows
    for each statement execute function mailbox_keywords_grow();
