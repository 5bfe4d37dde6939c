-- Meter-side prepayment's secure commands (SECURE-COMMAND.md; core::secure::keys): the company's
-- master key versions — each key itself is sealed in `secrets` as `secure.master.v<N>`, never
-- stored or logged in clear — and each meter's secure state: the key version it was loaded with
-- (a rotation gives new meters the new key; existing ones keep theirs until re-keyed) and its
-- counters as last read back (0x0C60 over Modbus, MQTT readings).
create table secure_master_keys (
    version integer primary key check (version >= 1),
    created_at timestamptz not null default now(),
    created_by text not null
);

create table meter_secure (
    meter_id uuid primary key references meters(id),
    key_version integer not null references secure_master_keys(version),
    purchase_count bigint check (purchase_count between 0 and 4294967295),
    control_count bigint check (control_count between 0 and 4294967295),
    remaining_fen bigint,
    price_units bigint check (price_units between 0 and 4294967295),
    counters_read_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
