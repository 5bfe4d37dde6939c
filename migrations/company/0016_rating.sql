-- The rating worker (DESIGN.md: Money and the ledger, platform-side meters; Tariffs and rating).
-- Per (account, meter): where rating stands (the last reading taken into account, the month- and
-- year-to-date energy and the sub-fen rest). One charge line per (meter, reading), written
-- once; lines are posted to the wallet in batches per meter, and `posted` marks them so a line
-- is never posted twice.

create table rating_state (
    account_id uuid not null references shop_accounts (id),
    meter_id uuid not null references meters (id),
    -- The reading the next interval starts from, and whether it is the account's opening one
    -- (then the interval's energy is counted from the opening register value).
    last_read_at timestamptz not null,
    last_energy_wh bigint not null,
    from_opening boolean not null default true,
    month_year integer,
    month integer,
    month_wh bigint not null default 0,
    year integer,
    year_wh bigint not null default 0,
    remainder_e5 bigint not null default 0 check (remainder_e5 >= 0 and remainder_e5 < 100000),
    -- A held reading stops this meter's rating until an operator releases or corrects it.
    held_at timestamptz,
    held_reason text,
    updated_at timestamptz not null default now(),
    primary key (account_id, meter_id)
);

create table charge_lines (
    meter_id uuid not null references meters (id),
    read_at timestamptz not null,
    account_id uuid not null references shop_accounts (id),
    interval_start timestamptz not null,
    energy_wh bigint not null check (energy_wh >= 0),
    debit_fen bigint not null check (debit_fen >= 0),
    -- The priced pieces (period, tier, Wh, price units, exact charge in 1e-5 fen).
    lines jsonb not null,
    rated_at timestamptz not null,
    posted boolean not null default false,
    posted_txn uuid references ledger_transactions (id),
    primary key (meter_id, read_at)
);
create index charge_lines_unposted on charge_lines (account_id, meter_id) where not posted;

alter table field_alarms drop constraint field_alarms_kind_check;
alter table field_alarms add constraint field_alarms_kind_check
    check (kind in ('meter_stale', 'gateway_offline', 'reading_held'));
