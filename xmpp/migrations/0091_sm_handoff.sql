-- Issue 14 item 4: stream management (XEP-0198) across a node's death.
-- A hand-off row placed on a resumable stream-managed session is marked, before the
-- client can see the message, with the session's resumption id and the stanza's position
-- in the stream (the server's outbound count, mod 2^32). When the node dies, a client
-- that tries to resume elsewhere names that id and its count h: rows up to h were
-- received (dropped), the others go on (the account's other sessions, else offline
-- storage), once. A marked row waits for that attempt up to xmpp.sm_resume_timeout.
-- No index on the new columns, so the mark can be a HOT update (no index entries per
-- message); the rare lookup by sm_id (a resumption elsewhere) scans the pending rows.
alter table xmpp_handoff add column sm_id text, add column seq bigint;
