-- Files uploaded to the import wizard, kept between the dry run and the confirmation (servers
-- are stateless). Old uploads are worthless after a day; a cleanup deletes them.
create table import_uploads (
    id uuid primary key,
    kind text not null check (kind in ('shops', 'gateways', 'meters')),
    filename text not null,
    content bytea not null,
    report jsonb not null,                   -- the dry run's ImportReport, then the import's
    created_by uuid not null,
    created_at timestamptz not null default now(),
    confirmed_at timestamptz
);
