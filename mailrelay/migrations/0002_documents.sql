-- Official documents: one row per sealed message (sent from here or received by SMTP),
-- one row per recipient unit with its verification verdict, delivery and receipt.
create table documents (
    id                bigserial primary key,
    doc_id            text not null,            -- X-CX-Doc-Id, or the Message-ID of a foreign one
    title             text not null default '',
    number            text not null default '', -- 文号
    from_unit         text not null default '', -- unit code, or the sender's address if foreign
    from_name         text,
    sender            text not null default '', -- the seal's address (From)
    urgency           text not null default 'normal',
    classification    text not null default 'internal',
    origin            text not null check (origin in ('cli', 'mail', 'smtp')),
    sent_by           text,                     -- the clerk or admin who sent it from here
    header_message_id text,                     -- the Message-ID field
    message_id        bigint unique,            -- messages.id of the sealed message as queued
    queue_id          text,
    digest            bytea,                    -- digest of the sealed content (receipts)
    digest_algorithm  text,
    created_at        timestamptz not null default now()
);
create index documents_doc_id_idx on documents(doc_id);
create index documents_hmid_idx on documents(header_message_id);
create index documents_from_idx on documents(from_unit);

create table document_recipients (
    document_id          bigint not null references documents(id) on delete cascade,
    unit                 text not null,
    state                text not null default 'queued'
                         check (state in ('queued', 'delivered', 'held', 'signed')),
    trusted              boolean,
    reason               text,                  -- Verdict reason code ("ok" when trusted)
    reason_text          text,
    signer               text,                  -- signer certificate subject
    signer_serial        text,
    verified_at          timestamptz,
    delivered_at         timestamptz,
    delivered_message_id bigint,                -- the stamped message in the clerks' INBOXes
    clerks               int not null default 0,
    receipt_by           text,                  -- who signed for it (签收)
    receipt_sent_at      timestamptz,
    signed_at            timestamptz,           -- when the sealed receipt was verified
    signed_by            text,
    receipt_message_id   bigint,
    updated_at           timestamptz not null default now(),
    primary key (document_id, unit)
);
create index document_recipients_unit_idx on document_recipients(unit, state);

-- What happened that has no recipient row of its own: rejected receipts, refused submissions.
create table document_events (
    id           bigserial primary key,
    document_id  bigint references documents(id) on delete cascade,
    unit         text,
    kind         text not null,
    detail       text not null default '',
    message_id   bigint,
    at           timestamptz not null default now()
);
create index document_events_doc_idx on document_events(document_id);
