-- Issue #11: documents fail closed.
-- A delivered document whose seal is later revoked for key compromise becomes
-- 'revoked-after-delivery'; the receiving clerks are told once (revoked_notified_at).
alter table document_recipients drop constraint if exists document_recipients_state_check;
alter table document_recipients add constraint document_recipients_state_check
    check (state in ('queued', 'delivered', 'held', 'signed', 'revoked-after-delivery'));
alter table document_recipients add column if not exists revoked_notified_at timestamptz;
alter table document_recipients add column if not exists warning text;
create index if not exists document_recipients_serial_idx
    on document_recipients(signer_serial) where signer_serial is not null;
