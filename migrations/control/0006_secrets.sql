-- The platform's own secrets at rest (as each company's `secrets`, company/0013): e.g. a
-- platform SMS account. Same shape, same envelope (core::kernel::secrets).
create table secrets (
    name text primary key check (name ~ '^[a-z0-9_.:-]{1,100}$'),
    key_id text not null,
    sealed text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
-- Rotation looks for what is not under the current key.
create index secrets_key on secrets (key_id);
