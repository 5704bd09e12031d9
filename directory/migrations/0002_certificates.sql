-- The city CA/RA: the root CA (one row) and every certificate it issued.
-- Private keys are PKCS#8 PEM encrypted with the CA passphrase; they never leave encrypted.
create table ca (
    id          int primary key default 1 check (id = 1),
    cert_pem    bytea not null,
    key_pem     bytea not null,                 -- encrypted PKCS#8
    key_type    text not null,
    revision    bigint not null default 1,      -- bumped on every issue and revocation
    created_at  timestamptz not null default now()
);

create table certificates (
    serial      text primary key,               -- lower-case hex, no separators
    kind        text not null check (kind in ('seal', 'personal')),
    unit_code   text,                           -- the seal's unit, or the holder's unit
    address     text not null,                  -- the rfc822Name in subjectAltName
    subject     text not null,                  -- RFC 4514 string
    cert_der    bytea not null,
    key_pem     bytea,                          -- encrypted PKCS#8 (null: key not kept)
    key_type    text not null,
    not_before  timestamptz not null,
    not_after   timestamptz not null,
    status      text not null default 'valid' check (status in ('valid', 'revoked')),
    revoked_at  timestamptz,
    reason      int,                            -- RFC 5280 §5.3.1 CRLReason code
    created_at  timestamptz not null default now()
);
create index certificates_address_idx on certificates(address);
create index certificates_unit_idx on certificates(unit_code, kind);

-- Caches of trust state (CRL, verification) in every process watch the CA revision.
create or replace function certificates_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('certificates_changed', '');
    return null;
end $$;
create trigger certificates_changed after insert or update or delete on certificates
    for each statement execute function certificates_notify();
