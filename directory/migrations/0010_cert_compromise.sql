-- Issue #11: the date a key was compromised (RFC 5280 §5.3.2 invalidityDate), given at
-- revocation; documents sealed since then are re-examined (revoked-after-delivery).
alter table certificates add column if not exists compromised_at timestamptz;
