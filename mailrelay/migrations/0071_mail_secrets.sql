-- Secrets shared by every node of the mail service (e.g. the SRS key, issue 16): made once
-- by the first process that needs one, so all nodes rewrite and reverse alike.
create table mail_secrets (
    name   text primary key,
    value  bytea not null
);
