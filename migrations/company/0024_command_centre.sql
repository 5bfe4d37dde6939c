-- Remote control at scale (core::power::batch, core::commands::centre; DESIGN.md: Commands).
-- A batch is one person's trip, close, release or keep-power over a selection of meters (by
-- building, floor, gateway or text), confirmed with the count they were shown; its commands
-- carry its id so the page can show its progress. `retry_of` links a command an operator sent
-- again from the command centre to the one that failed.
create table control_batches (
    id uuid primary key,
    op text not null check (op in ('trip', 'close', 'release', 'keep_power_on', 'keep_power_off')),
    -- The selection as asked (building_id, floor_id, gateway_id, q).
    selection jsonb not null,
    meters integer not null check (meters >= 0),
    -- Meters of the selection left out (keep-power blocks a trip).
    skipped integer not null default 0 check (skipped >= 0),
    created_by text not null,
    created_at timestamptz not null
);

alter table commands
    add column batch_id uuid references control_batches (id),
    add column retry_of uuid references commands (id),
    -- A bus session that got no answer holds the command (`sent`) and sends it again at this
    -- time (retries with backoff; its lease covers the wait).
    add column next_try_at timestamptz;
create index commands_batch on commands (batch_id) where batch_id is not null;
create index commands_recent on commands (created_at);

-- The tenant hears "power cut" or "power back" once the relays are seen in that state
-- (core::power::confirm), not when the command is merely queued: the rules record what is
-- waiting to be told, and since when.
alter table account_power
    add column told_pending text check (told_pending in ('tripped', 'restored')),
    add column pending_since timestamptz;

-- A deferred message replaced by a newer one of the same kind before the night window ended
-- (DESIGN.md: "deferred to 08:00, the latest of each kind only").
alter table notifications drop constraint notifications_state_check;
alter table notifications add constraint notifications_state_check
    check (state in ('queued', 'sent', 'delivered', 'failed', 'superseded'));

-- Operators acknowledge field alarms (the alarm list): who saw it and when; the alarm stays
-- open until its cause clears.
alter table field_alarms
    add column acknowledged_at timestamptz,
    add column acknowledged_by text;
