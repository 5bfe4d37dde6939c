-- Power follows money (core::power; DESIGN.md: Alarms, trip and restore). What the rules already
-- did for each account (alarms fired, the trip notice, tripped), how long a trip notice runs,
-- keep-power (保电) per meter, and the messages the rules send (the sandbox channel keeps them
-- here; the vendor channels arrive with the notifications work).
create table account_power (
    account_id uuid primary key references shop_accounts (id),
    alarm1_fired boolean not null default false,
    alarm2_fired boolean not null default false,
    -- The trip notice was given then (the trip condition first held).
    noticed_at timestamptz,
    -- The account's meters were sent a trip then, and no restore since.
    tripped_at timestamptz,
    updated_at timestamptz not null default now()
);

alter table settings add column trip_notice_s integer not null default 600
    check (trip_notice_s between 0 and 86400);

-- A meter under keep-power is never tripped, automatically or remotely.
alter table meters add column keep_power boolean not null default false;

create table notifications (
    id uuid primary key,
    account_id uuid references shop_accounts (id),
    -- alarm1, alarm2, trip_notice, tripped, restored, …
    kind text not null,
    -- A phone number, or a user's login.
    recipient text not null,
    channel text not null default 'sandbox',
    body text not null,
    created_at timestamptz not null,
    -- Messages in the night window wait for 08:00 local (trip notices never wait).
    deliver_after timestamptz not null,
    state text not null default 'queued' check (state in ('queued', 'sent', 'delivered', 'failed'))
);
create index notifications_account on notifications (account_id, created_at);

-- A meter whose relay stays out of step with what the rules intend, after the re-sent commands
-- ran out (core::power::relay).
alter table field_alarms drop constraint field_alarms_kind_check;
alter table field_alarms add constraint field_alarms_kind_check
    check (kind in ('meter_stale', 'gateway_offline', 'reading_held', 'relay_mismatch'));

-- An operator's remote trip or close (core::power::control): the relay state people asked for,
-- which the intended-state comparison keeps until an operator releases it. An operator's trip
-- sticks (a safety trip is not undone by a top-up); an operator's close lasts until the rules
-- trip the account again.
alter table meters add column relay_override text check (relay_override in ('open', 'closed'));

-- Emergency credit (应急电; core::power::emergency): moves no money; lowers the account's trip
-- and restore levels by `amount_fen` until `expires_at` or until the available balance is ≥ 0
-- again (`ended_at`); at most once per local calendar month per account.
create table emergency_credits (
    id uuid primary key,
    account_id uuid not null references shop_accounts (id),
    amount_fen bigint not null check (amount_fen > 0),
    granted_at timestamptz not null,
    expires_at timestamptz not null check (expires_at > granted_at),
    ended_at timestamptz,
    -- The local month it counts against, `YYYY-MM`.
    local_month text not null,
    granted_by text not null,
    unique (account_id, local_month)
);

-- Per-account levels (DESIGN.md: "Levels per account (from company defaults, changeable per
-- account)"): null takes the company's default from `settings`.
alter table shop_accounts
    add column alarm1_fen bigint check (alarm1_fen >= 0),
    add column alarm2_fen bigint check (alarm2_fen >= 0),
    add column overdraft_limit_fen bigint check (overdraft_limit_fen >= 0),
    add column restore_level_fen bigint;
