-- Gateway identities are unique across the platform: ingest maps a DTU's registration bytes or
-- an MQTT client id to its company here before it knows which schema to use.
create table gateway_directory (
    identity text primary key,              -- the gateway's identity (MQTT client id, DTU name)
    registration_hex text unique,           -- DTU registration bytes, lowercase hex; null for others
    company_id bigint not null references company (id),
    gateway_id uuid not null,               -- the company schema's gateways.id
    kind text not null check (kind in ('dtu', 'modbus_tcp', 'mqtt')),
    status text not null check (status in ('enabled', 'suspended'))
);
create index gateway_directory_company on gateway_directory (company_id);
