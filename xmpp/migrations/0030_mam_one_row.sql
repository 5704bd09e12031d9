-- XMPP: one archive row per one-to-one message (issue 17 item 2). A row of xmpp_mam is
-- now in up to two archives: `owner`'s (the sender's, or a room's) and `peer`'s (the
-- recipient's, null when only one side archives). Both views share the row's stanza id
-- (XEP-0359: unique in each archive). `owner_shown` / `peer_shown` say whether the row is
-- still in that side's view: a user purging their archive hides their side only; a row
-- in nobody's view is deleted.
--
-- Existing rows (two per message, each in one archive) are converted as one-sided rows:
-- owner, stanza id and with_jid unchanged, peer null, so every id a client holds stays
-- valid and nobody's view changes.

alter table xmpp_mam add column peer text;
alter table xmpp_mam add column owner_shown boolean not null default true;
alter table xmpp_mam add column peer_shown boolean not null default false;
-- a peer is shown only when it is set
alter table xmpp_mam add constraint xmpp_mam_peer_shown_chk check (peer is not null or not peer_shown);

-- The stanza id is looked up for either side: lead the unique index with it.
create unique index xmpp_mam_sid_owner_idx on xmpp_mam(stanza_id, owner);
alter table xmpp_mam drop constraint xmpp_mam_owner_stanza_id_key;

-- Each view is a keyset range over one of two partial indexes (owner side, peer side);
-- with= is (owner, with_jid) on the owner side and (peer, owner) on the peer side.
drop index xmpp_mam_owner_idx;
drop index xmpp_mam_with_idx;
drop index xmpp_mam_ts_idx;
create index xmpp_mam_owner_idx on xmpp_mam(owner, id) where owner_shown;
create index xmpp_mam_with_idx on xmpp_mam(owner, with_jid, id) where owner_shown;
create index xmpp_mam_peer_idx on xmpp_mam(peer, id) where peer_shown;
create index xmpp_mam_peer_with_idx on xmpp_mam(peer, owner, id) where peer_shown;
