-- Secrets at rest (DESIGN.md: Server; core::kernel::secrets): a company's master keys, merchant
-- credentials and SMS/WeChat secrets, each sealed in an AES-256-GCM envelope naming its key id.
-- Nothing here is readable without the key-encryption keys, which live only in configuration.
create table secrets (
    name text primary key check (name ~ '^[a-z0-9_.:-]{1,100}$'),
    key_id text not null,
    sealed text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
-- Rotation looks for what is not under the current key.
create index secrets_key on secrets (key_id);
