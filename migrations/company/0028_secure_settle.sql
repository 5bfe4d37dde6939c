-- Meter-side prepayment in operation (DESIGN.md: Commands, secure rules; Money and the ledger,
-- meter-side meters; core::secure::settle).
--
-- The secure counters as the field last read them back (0x0C60 over a bus, the counter fields of
-- an MQTT reading). Ingest writes them and holds no key; the server's settle worker compares them
-- with what it sent (verifying a purchase, deduct or control command by its count) and
-- commissions a meter whose counters it has not stored yet.
create table meter_secure_readback (
    meter_id uuid primary key references meters(id),
    purchase_count bigint not null check (purchase_count between 0 and 4294967295),
    control_count bigint not null check (control_count between 0 and 4294967295),
    remaining_fen bigint not null,
    price_units bigint not null check (price_units between 0 and 4294967295),
    read_at timestamptz not null,
    updated_at timestamptz not null default now()
);

-- What the settle worker made of a command's secure acknowledgement (the status byte after the MAC
-- checked out, or why it was not believed), for the purchase history page.
alter table commands add column secure_status text;
-- Acknowledgements of this command that did not check out under the meter's key (a meter loaded
-- with another key answers so): after a few, the command fails with a key alarm.
alter table commands add column secure_refusals integer not null default 0;
-- The amount the frame carries (fen for purchase and deduct, price units for set price), so the
-- settle worker posts exactly what the meter was sent without opening the frame.
alter table commands add column secure_amount bigint;

-- An account is platform-side or meter-side, never mixed (DESIGN.md); chosen from its meters at
-- opening. Meter-side accounts are not tripped by the platform's balance rules: the meter does it.
alter table shop_accounts add column prepayment_mode text not null default 'platform'
    check (prepayment_mode in ('platform', 'meter'));

-- What an operator decided about credit found on a meter-side meter at opening (DESIGN: opening
-- needs the read-back remaining amount to be 0 or an audited decision).
alter table account_meters add column opening_remaining_fen bigint;

-- Secure alarms: a key that the meter does not share (01/02), counts out of step with the
-- platform's (a purchase the platform did not make, a lost frame: reconciliation), drift of the
-- shadow balance beyond the company's threshold.
alter table field_alarms drop constraint field_alarms_kind_check;
alter table field_alarms add constraint field_alarms_kind_check
    check (kind in ('meter_stale', 'gateway_offline', 'reading_held', 'relay_mismatch',
                    'secure_key', 'secure_reconcile', 'secure_drift'));

alter table settings add column drift_alarm_fen bigint not null default 500
    check (drift_alarm_fen >= 0);

-- Top-ups of meter-side accounts name the meter their credit goes to (DESIGN.md); the settle
-- worker turns a meter's open requests into one purchase once nothing is in flight on it, for
-- at most the wallet's balance, and marks them done with that command.
create table secure_purchase_requests (
    id uuid primary key,
    account_id uuid not null references shop_accounts(id),
    meter_id uuid not null references meters(id),
    amount_fen bigint not null check (amount_fen > 0),
    source_txn uuid,
    requested_at timestamptz not null,
    command_id uuid references commands(id),
    done_at timestamptz
);
create index secure_purchase_requests_open on secure_purchase_requests (account_id, requested_at)
    where done_at is null;

-- Closing a meter-side account (DESIGN.md: Account lifecycle, step 2): per meter, a verified
-- secure trip (the meter stops counting down), the counters read back, a `deduct` of the
-- remaining amount R when R > 0 — driven by the settle worker — or an operator's audited decision
-- to close with the last read-back amount when the meter cannot be reached.
create table meter_side_closing (
    account_id uuid not null references shop_accounts(id),
    meter_id uuid not null references meters(id),
    stage text not null check (stage in ('trip', 'deduct', 'done')),
    trip_command uuid references commands(id),
    deduct_command uuid references commands(id),
    -- R: what the meter held after the trip (taken back by the deduct), or, by decision, the last
    -- read-back amount left on an unreachable meter.
    remaining_fen bigint,
    decided_by text,
    updated_at timestamptz not null default now(),
    primary key (account_id, meter_id)
);

-- An approved cancel moves a failed purchase's money from `in_transit` back to the wallet
-- (DESIGN.md: only an approved cancel does), asked and decided in `approval_requests`.
do $$
declare
    c record;
begin
    for c in select conname from pg_constraint
             where conrelid = 'approval_requests'::regclass and contype = 'c'
               and pg_get_constraintdef(oid) like '%write_off%'
    loop
        execute format('alter table approval_requests drop constraint %I', c.conname);
    end loop;
end $$;
alter table approval_requests add constraint approval_requests_kind_check
    check (kind in ('reading_correction', 'write_off', 'purchase_cancel'));
alter table approval_requests add constraint approval_requests_amount_check
    check ((kind in ('write_off', 'purchase_cancel')) = (amount_fen is not null));
