-- Every stored reading but an out-of-order one is now the baseline for the next (DESIGN.md:
-- Tariffs and rating, the flag table); the energy an interval counts is kept on the reading
-- that ends it, so hourly energy (a sum of these) and daily energy (the same intervals split by
-- local day and TOU period) always agree, and held intervals (reset, gap, jump, ratio mismatch)
-- count nothing until released.
alter table readings add column counted_wh bigint;
comment on column readings.counted_wh is
    'Wh the interval ending at this reading counts as consumption; null when it is the first, held or out of order';
-- Readings stored before: as the old rule counted them (the delta from the previous unflagged
-- reading). `powertab readings rebuild` re-classifies them with the new rule.
update readings r set counted_wh = d.delta
from (
    select meter_id, read_at, energy_wh - lag(energy_wh) over (partition by meter_id order by read_at) as delta
    from readings where flag is null
) d
where r.meter_id = d.meter_id and r.read_at = d.read_at and r.flag is null and d.delta >= 0;
