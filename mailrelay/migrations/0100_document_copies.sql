-- Nothing twice: a copy of signed mail that is not a document, delivered to the clerks of
-- a receiving unit, is recorded in the same transaction as the copy itself (documents
-- record theirs in document_recipients). A retry after a crash finds it and delivers
-- nothing again.
create table if not exists document_copies (
    message_id      bigint not null,        -- messages.id as queued to <unit>.docs@
    unit            text not null,
    copy_message_id bigint not null,        -- messages.id of the copy in the INBOXes
    at              timestamptz not null default now(),
    primary key (message_id, unit)
);
