-- IMAP store support: unique UIDVALIDITY values and indexes for CONDSTORE/QRESYNC.

-- RFC 3501 §2.3.1.1: a mailbox deleted and created again under the same name must get a
-- new UIDVALIDITY. The epoch-second default repeats within one second; a sequence never does.
create sequence if not exists mailbox_uidvalidity_seq;
select setval('mailbox_uidvalidity_seq',
              greatest(extract(epoch from clock_timestamp())::bigint,
                       (select coalesce(max(uidvalidity), 0) + 1 from mailboxes)));
alter table mailboxes alter column uidvalidity set default nextval('mailbox_uidvalidity_seq');

-- Changes since a MODSEQ (NOOP/IDLE updates, CHANGEDSINCE, QRESYNC).
create index if not exists mailbox_messages_modseq_idx on mailbox_messages(mailbox_id, modseq);
create index if not exists mailbox_expunged_modseq_idx on mailbox_expunged(mailbox_id, modseq);
