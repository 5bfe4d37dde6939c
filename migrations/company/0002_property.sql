-- Property setup: buildings → floors → shops, company defaults, the holiday calendar, and
-- versioned tariff plans. Runs with search_path = the company schema.

create table settings (
    singleton boolean primary key default true check (singleton), -- exactly one row
    alarm1_fen bigint not null default 5000 check (alarm1_fen >= 0),   -- first low-balance warning
    alarm2_fen bigint not null default 2000 check (alarm2_fen >= 0),   -- second warning
    overdraft_limit_fen bigint not null default 0 check (overdraft_limit_fen >= 0), -- trip at -limit
    restore_level_fen bigint not null default 100,                     -- close again at or above
    quiet_start_minute integer check (quiet_start_minute between 0 and 1439), -- local; no trips
    quiet_end_minute integer check (quiet_end_minute between 0 and 1439),     -- inside the window
    no_trip_on_holidays boolean not null default true,
    arrears_cap_fen bigint not null default 100000 check (arrears_cap_fen >= 0), -- max postponed debt
    updated_at timestamptz not null default now(),
    check (alarm1_fen >= alarm2_fen),
    check (restore_level_fen > -overdraft_limit_fen),
    check ((quiet_start_minute is null) = (quiet_end_minute is null))
);
insert into settings default values;

create table calendar_days (
    day date primary key,
    kind text not null check (kind in ('holiday', 'workday')), -- workday = make-up workday (调休)
    name text not null default ''
);

create table buildings (
    id uuid primary key,
    name text not null unique,
    address text not null default '',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create table floors (
    id uuid primary key,
    building_id uuid not null references buildings (id) on delete restrict,
    name text not null,                     -- e.g. 'B1', '1F'
    sort_order integer not null default 0,  -- display order within the building
    unique (building_id, name)
);

create table shops (
    id uuid primary key,
    building_id uuid not null references buildings (id) on delete restrict, -- = the floor's
    floor_id uuid not null references floors (id) on delete restrict,
    number text not null,                   -- shop number, unique in its building
    name text not null default '',
    area_centi_m2 bigint check (area_centi_m2 >= 0), -- area in 0.01 m²
    contact_name text not null default '',
    contact_phone text not null default '',
    status text not null default 'vacant' check (status in ('vacant', 'occupied', 'closed')),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    unique (building_id, number)
);
create index shops_floor on shops (floor_id);

create table tariff_plans (
    id uuid primary key,
    name text not null unique,
    description text not null default '',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create table tariff_versions (
    plan_id uuid not null references tariff_plans (id) on delete cascade,
    effective date not null,                -- in force from 00:00 local time of this date
    body jsonb not null,                    -- core::tariff::TariffVersion, validated by core
    created_at timestamptz not null default now(),
    primary key (plan_id, effective)
);
