-- Closing an account (销户, DESIGN.md: Account lifecycle): the final reading of each meter and
-- whether an operator typed it.
alter table account_meters add column closing_energy_wh bigint check (closing_energy_wh >= 0);
alter table account_meters add column closing_read_at timestamptz;
alter table account_meters add column closing_manual boolean not null default false;
