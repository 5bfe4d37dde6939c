-- Meter readings (DESIGN.md: Ingest, Storage). Raw register values are kept with every
-- reading; the table is partitioned by month (partitions are made ahead by ingest, with a
-- DEFAULT partition for strays) and indexed by BRIN on time. A reading that does not count as
-- consumption (reset, rollover, gap, out of order, implausible jump, ratio mismatch) is stored
-- with its flag. `meter_latest` holds each meter's newest reading; `daily_energy` the energy per
-- local day and TOU period.

create table readings (
    meter_id uuid not null,
    read_at timestamptz not null,
    received_at timestamptz not null default now(),
    energy_wh bigint not null,
    -- sharp, peak, flat, valley, deep valley registers when the meter has them
    tou_wh bigint[],
    power_w bigint,
    voltage_dv integer[],
    current_ca integer[],
    pf_milli integer,
    remaining_fen bigint,
    purchase_count integer,
    relay_closed boolean,
    alarms text[],
    raw bytea,
    flag text check (flag in ('reset', 'rollover', 'gap', 'out_of_order', 'jump', 'ratio_mismatch')),
    primary key (meter_id, read_at)
) partition by range (read_at);
create table readings_default partition of readings default;
create index readings_read_at on readings using brin (read_at);

-- Partitions for the previous, current and next two months; ingest keeps making them ahead.
do $$
declare
    first date := date_trunc('month', now() - interval '1 month')::date;
begin
    for i in 0..3 loop
        execute format(
            'create table if not exists %I partition of readings for values from (%L) to (%L)',
            'readings_' || to_char(first + make_interval(months => i), 'YYYYMM'),
            first + make_interval(months => i),
            first + make_interval(months => i + 1));
    end loop;
end $$;

create table meter_latest (
    meter_id uuid primary key references meters (id),
    read_at timestamptz not null,
    energy_wh bigint not null,
    tou_wh bigint[],
    power_w bigint,
    voltage_dv integer[],
    current_ca integer[],
    remaining_fen bigint,
    purchase_count integer,
    relay_closed boolean,
    alarms text[],
    updated_at timestamptz not null default now()
);

create table daily_energy (
    meter_id uuid not null,
    day date not null,            -- the property's local date
    period text not null check (period in ('sharp', 'peak', 'flat', 'valley', 'deep_valley')),
    energy_wh bigint not null check (energy_wh >= 0),
    primary key (meter_id, day, period)
);
