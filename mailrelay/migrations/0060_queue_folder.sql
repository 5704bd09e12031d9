-- Local delivery into a mailbox other than INBOX (DMARC quarantine delivers to Junk).
alter table queue add column if not exists folder text;
