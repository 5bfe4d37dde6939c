-- Whether a meter's own TOU registers split its energy into periods (DESIGN.md: Tariffs and
-- rating): on, daily energy (and later rating) use the registers' increases; off — the
-- default, since a meter's TOU table rarely matches the plan — the plan's clock.
alter table meters add column tou_registers_match boolean not null default false;
