-- Shop tenants' self-service (issue 14: Tenant experience). One-time codes sent by SMS to link a
-- phone to the accounts registered with it, to log in without a password and to reset one; only
-- a hash of each code is kept. The company's rules for what tenants may do themselves.
create table tenant_codes (
    id uuid primary key,
    phone text not null,
    purpose text not null check (purpose in ('login', 'reset')),
    code_hash bytea not null,
    created_at timestamptz not null,
    expires_at timestamptz not null,
    -- Wrong guesses against this code; at the limit it is dead.
    attempts integer not null default 0,
    used_at timestamptz,
    source_ip text
);
create index tenant_codes_by_phone on tenant_codes (phone, purpose, created_at);
create index tenant_codes_by_source on tenant_codes (source_ip, created_at);

-- Emergency credit a tenant grants themselves (0: only operators grant it); top-up presets shown
-- on the tenant's phone, in fen.
alter table settings
    add column tenant_emergency_fen bigint not null default 0
        check (tenant_emergency_fen between 0 and 1000000),
    add column tenant_emergency_hours integer not null default 24
        check (tenant_emergency_hours between 1 and 72),
    add column top_up_presets_fen bigint[] not null default '{5000,10000,20000,50000}';

