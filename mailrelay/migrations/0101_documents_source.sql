-- Nothing twice: a document a clerk sent by mail to the unit's document inbox records the
-- queued message it was made from, in the same transaction as the sealed document's own
-- submission. A retry after a crash finds it and seals and sends nothing again.
alter table documents add column if not exists source_message_id bigint;
create unique index if not exists documents_source_message_idx
    on documents(source_message_id) where source_message_id is not null;
