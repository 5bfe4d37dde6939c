-- DTU connections whose registration matched no enabled gateway: counted and listed so that
-- admins can claim them as new gateways (DESIGN.md: Ingest). One row per registration; the
-- count and the last source address and time are kept current.
create table unclaimed_registrations (
    registration_hex text primary key,
    first_seen_at timestamptz not null default now(),
    last_seen_at timestamptz not null default now(),
    last_peer text not null default '',
    attempts bigint not null default 1,
    -- A suspended gateway's registration: which company may see it.
    company_id bigint references company (id)
);
