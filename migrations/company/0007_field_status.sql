-- What ingest knows about the field right now: which gateway buses are connected (and since
-- when, from where, last heard), and each meter's polling record (success rate, latency, last
-- error). Written by ingest, read by the fleet pages and the staleness alarms.

create table bus_sessions (
    bus_id uuid primary key references buses (id),
    gateway_id uuid not null references gateways (id),
    online boolean not null,
    peer text not null default '',
    connected_at timestamptz,
    last_seen_at timestamptz,
    updated_at timestamptz not null default now()
);

create table meter_polls (
    meter_id uuid primary key references meters (id),
    polls bigint not null default 0,
    failures bigint not null default 0,
    consecutive_failures integer not null default 0,
    last_latency_ms integer,
    last_ok_at timestamptz,
    last_error text not null default '',
    updated_at timestamptz not null default now()
);
