-- The command queue (DESIGN.md: Commands): what people and rules ask of meters. Rows are
-- inserted by the server with a NOTIFY on channel `pt_commands` (payload
-- `<schema>:<meter id>:<command id>`); ingest picks them up and moves them through
-- queued → sent → acknowledged → verified, or failed / expired. Billing adds the money-moving
-- ones (purchase, deduct) and their secure frames.

create table commands (
    id uuid primary key,
    meter_id uuid not null references meters (id),
    op text not null check (op in ('trip', 'close', 'release', 'keep_power_on', 'keep_power_off',
        'purchase', 'read_now', 'sync_clock', 'deduct', 'set_tou_table', 'set_prepaid_params')),
    state text not null default 'queued'
        check (state in ('queued', 'sent', 'acknowledged', 'verified', 'failed', 'expired')),
    -- Who asked: `operator:<user id>` or `rule:<name>`.
    source text not null,
    detail text not null default '',
    expires_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index commands_open on commands (meter_id) where state in ('queued', 'sent');
