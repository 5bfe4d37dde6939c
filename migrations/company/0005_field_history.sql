-- The field over time. Gateways and buses are retired, not deleted, so that the meters that were
-- on them keep their history (and readings); a retired identity or port number can be used again.
-- Meters are removed with a final reading, and a meter swap links the old meter to its
-- replacement with both readings.

alter table gateways drop constraint gateways_identity_key;
alter table gateways drop constraint gateways_status_check;
alter table gateways add constraint gateways_status_check
    check (status in ('enabled', 'suspended', 'removed'));
alter table gateways add column removed_at timestamptz;
create unique index gateways_identity on gateways (identity) where status <> 'removed';

alter table buses drop constraint buses_gateway_id_number_key;
alter table buses add column removed_at timestamptz;
create unique index buses_number on buses (gateway_id, number) where removed_at is null;

alter table meters add column removed_at timestamptz;
alter table meters add column final_energy_wh bigint check (final_energy_wh >= 0);
alter table meters add constraint meters_removed_has_time
    check ((status = 'removed') = (removed_at is not null));

create table meter_swaps (
    id uuid primary key,
    old_meter_id uuid not null unique references meters (id),
    new_meter_id uuid not null unique references meters (id),
    swapped_at timestamptz not null,
    old_final_energy_wh bigint not null check (old_final_energy_wh >= 0),
    new_initial_energy_wh bigint not null check (new_initial_energy_wh >= 0),
    reason text not null default '',
    created_by uuid,
    created_at timestamptz not null default now()
);
