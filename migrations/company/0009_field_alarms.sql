-- Field alarms (DESIGN.md: Ingest, Freshness): a meter without a new reading for longer than
-- the company's limit is stale, a gateway with every bus offline for longer than its limit is
-- offline. Ingest raises one open alarm per (kind, target) and clears it when the meter or
-- gateway is back; operators see them on the fleet page and through the API.

alter table settings add column stale_meter_s integer not null default 300
    check (stale_meter_s between 60 and 86400);
alter table settings add column offline_gateway_s integer not null default 300
    check (offline_gateway_s between 60 and 86400);

create table field_alarms (
    id uuid primary key,
    kind text not null check (kind in ('meter_stale', 'gateway_offline')),
    target_id uuid not null,          -- the meter or gateway
    raised_at timestamptz not null default now(),
    cleared_at timestamptz,
    detail text not null default ''
);
create unique index field_alarms_open on field_alarms (kind, target_id) where cleared_at is null;
create index field_alarms_raised on field_alarms (raised_at);
