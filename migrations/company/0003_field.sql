-- The field: gateways (DTUs that dial in, Modbus-TCP gateways the platform dials, MQTT
-- gateways), their RS485 buses, and the meters on them. Runs with search_path = the company
-- schema; identities are also registered in control.gateway_directory.

create table gateways (
    id uuid primary key,
    identity text not null unique,
    name text not null default '',
    kind text not null check (kind in ('dtu', 'modbus_tcp', 'mqtt')),
    status text not null default 'enabled' check (status in ('enabled', 'suspended')),
    registration_hex text,                  -- dtu: the bytes it sends first, lowercase hex
    registration_repeats boolean not null default false, -- dtu: prefixes every packet with them
    heartbeat_hex text,                     -- dtu: heartbeat bytes, dropped wherever they arrive
    host text,                              -- modbus_tcp: host the platform dials
    mqtt_password_hash text,                -- mqtt: argon2id of the gateway's credential
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    check ((kind = 'dtu') = (registration_hex is not null)),
    check ((kind = 'modbus_tcp') = (host is not null)),
    check ((kind = 'mqtt') = (mqtt_password_hash is not null))
);

create table buses (
    id uuid primary key,
    gateway_id uuid not null references gateways (id) on delete cascade,
    number integer not null check (number between 1 and 64), -- serial port, 1-based
    protocol text not null check (protocol in ('modbus_rtu', 'dlt645')),
    baud integer not null check (baud in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)),
    parity text not null check (parity in ('N', 'E', 'O')),
    stop_bits integer not null check (stop_bits in (1, 2)),
    gap_ms integer not null check (gap_ms between 0 and 10000),        -- pause between requests
    timeout_ms integer not null check (timeout_ms between 50 and 60000), -- per request
    tcp_port integer check (tcp_port between 1 and 65535),            -- modbus_tcp: this bus's port
    unique (gateway_id, number)
);

create table meters (
    id uuid primary key,
    bus_id uuid not null references buses (id),
    model text not null check (model in ('dtsy1352', 'ddsy1352', 'dlt645', 'modbus_generic')),
    address text not null,                  -- Modbus '1'..'247' or 12-digit DL/T 645 address
    meter_number text not null,             -- up to 16 digits; keys the secure command
    register_map jsonb,                     -- modbus_generic: where its values are
    dlt645_password text,                   -- dlt645: 8 hex digits for remote control
    dlt645_operator text,                   -- dlt645: 8 hex digits operator code
    ct_ratio integer not null default 1 check (ct_ratio between 1 and 10000),
    pt_ratio integer not null default 1 check (pt_ratio between 1 and 10000),
    prepayment_mode text not null default 'platform' check (prepayment_mode in ('platform', 'meter')),
    role text not null default 'shop' check (role in ('shop', 'main', 'common')),
    parent_id uuid references meters (id),  -- the feeder this meter hangs under
    shop_id uuid references shops (id),
    tariff_plan_id uuid references tariff_plans (id),
    alarm1_fen bigint check (alarm1_fen >= 0), -- null: the company default
    alarm2_fen bigint check (alarm2_fen >= 0),
    install_date date,
    initial_energy_wh bigint not null default 0 check (initial_energy_wh >= 0),
    status text not null default 'active' check (status in ('active', 'removed')),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
-- One active meter per address on a bus, and meter numbers unique among active meters.
create unique index meters_bus_address on meters (bus_id, address) where status = 'active';
create unique index meters_number on meters (meter_number) where status = 'active';
create index meters_shop on meters (shop_id);
