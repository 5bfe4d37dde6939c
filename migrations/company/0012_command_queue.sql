-- The typed command queue (DESIGN.md: Commands). `cancelled` is new (a newer opposite control
-- command cancels a queued one), and so is `set_price`. A claim records when the command was
-- sent, by which process (`lease_holder`) and until when that process answers for it
-- (`lease_until`): a `sent` command whose lease ran out goes back to the queue, recovered by the
-- process that next holds the meter's bus session — never by failing everything at start-up.

alter table commands drop constraint commands_op_check;
alter table commands add constraint commands_op_check
    check (op in ('trip', 'close', 'release', 'keep_power_on', 'keep_power_off', 'purchase',
        'read_now', 'sync_clock', 'deduct', 'set_price', 'set_tou_table', 'set_prepaid_params'));
alter table commands drop constraint commands_state_check;
alter table commands add constraint commands_state_check
    check (state in ('queued', 'sent', 'acknowledged', 'verified', 'failed', 'expired', 'cancelled'));

alter table commands
    add column sent_at timestamptz,
    add column attempts integer not null default 0 check (attempts >= 0),
    add column lease_holder text,
    add column lease_until timestamptz,
    -- A sent command always knows when and by whom.
    add constraint commands_sent_has_lease check (state <> 'sent' or (sent_at is not null and lease_until is not null));

drop index commands_open;
create index commands_open on commands (meter_id, created_at) where state in ('queued', 'sent', 'acknowledged');
