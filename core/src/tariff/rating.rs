//! Rating: the pure function that turns one interval of metered energy into charge lines and
//! a whole-fen debit (DESIGN.md: Tariffs and rating). No clock, no database: the same inputs
//! always give the same lines, so rating can be replayed, tested exhaustively and run in the
//! browser for the tariff preview.
//!
//! 1. The interval is split where the price may change: local midnights (versions, seasons,
//!    holidays, month and year counters change there) and TOU switch points.
//! 2. The energy is apportioned to the parts **in whole Wh**: each part gets
//!    floor(E × its duration / interval duration), and the Wh left over go one each to the parts
//!    with the largest fractional remainders (ties to the earlier part). When the meter's own TOU
//!    registers give the split (its TOU table matches the plan's), each period's energy is
//!    apportioned among that period's parts instead.
//! 3. Each part's Wh are split again at tier thresholds of the meter's month-to-date or
//!    year-to-date energy (which restart at 00:00 local on the 1st).
//! 4. A line costs exactly Wh × price units, in 1e-5 fen. The meter carries the sub-fen rest:
//!    each rating debits the whole fen of (carried rest + exact charges) and carries the rest,
//!    always in [0, 1 fen). Closing an account rounds the last rest half-up.

use crate::kernel::money::{AmountFen, EnergyWh};
use crate::tariff::{Calendar, Period, TariffVersion, TierBasis, TierPrice};
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// 1e-5 fen units in one fen (1 Wh at 1 price unit = 1e-5 fen).
pub const E5_PER_FEN: i64 = 100_000;
/// Longest interval rated in one go (a meter silent for longer needs a person to look).
pub const INTERVAL_DAYS_MAX: i64 = 400;

/// What a meter's account carries from one rating to the next. A new account starts at
/// `RatingState::default()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatingState {
    /// Local (year, month) that `month_wh` counts.
    pub month: Option<(i32, u32)>,
    pub month_wh: EnergyWh,
    /// Local year that `year_wh` counts.
    pub year: Option<i32>,
    pub year_wh: EnergyWh,
    /// Carried sub-fen rest, in 1e-5 fen, in [0, 100_000).
    pub remainder_e5: i64,
}

/// Energy used by a meter between two readings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub energy_wh: EnergyWh,
    /// The meter's own TOU register deltas, when its TOU table matches the plan's.
    pub tou_wh: Option<BTreeMap<Period, EnergyWh>>,
}

/// One priced piece of the interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeLine {
    /// The part of the interval this energy was apportioned to (tier splits share it).
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Effective date of the plan version in force.
    pub version: NaiveDate,
    pub period: Period,
    /// Index of the tier, 0 without tiers.
    pub tier: usize,
    pub energy_wh: EnergyWh,
    pub price_units: i64,
    /// Exact charge, energy_wh × price_units, in 1e-5 fen.
    pub charge_e5: i64,
}

/// The result of rating one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rated {
    pub lines: Vec<ChargeLine>,
    /// Whole fen to debit now.
    pub debit_fen: AmountFen,
    pub state: RatingState,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RatingError {
    #[error("the interval ends before it starts")]
    EmptyInterval,
    #[error("the interval is longer than {INTERVAL_DAYS_MAX} days")]
    IntervalTooLong,
    #[error("negative energy is a reset or rollover, not consumption")]
    NegativeEnergy,
    #[error("no tariff version is in force on {0}")]
    NoVersion(NaiveDate),
    #[error("the meter's TOU registers do not add up to its total energy")]
    TouSplitSum,
    #[error("the meter recorded {0:?} energy in a period the plan does not have in this interval")]
    TouSplitMismatch(Period),
    #[error("amounts too large to rate")]
    Overflow,
}

/// A stretch of the interval with one version and one period.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    version: usize,
    period: Period,
    local_date: NaiveDate,
}

/// The UTC instant of `minute` past local midnight of `date` (the later instant after a DST gap).
pub fn local_instant(tz: Tz, date: NaiveDate, minute: u32) -> DateTime<Utc> {
    let naive = date
        .and_hms_opt(minute / 60, minute % 60, 0)
        .expect("a valid time of day");
    tz.from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(naive + Duration::hours(1)))
                .earliest()
        })
        .expect("a local time exists within an hour of any DST gap")
        .with_timezone(&Utc)
}

/// The version in force on `date`: the last one whose effective date is not after it.
fn version_on(versions: &[TariffVersion], date: NaiveDate) -> Result<usize, RatingError> {
    versions
        .iter()
        .enumerate()
        .filter(|(_, v)| v.effective <= date)
        .max_by_key(|(_, v)| v.effective)
        .map(|(i, _)| i)
        .ok_or(RatingError::NoVersion(date))
}

fn split(
    usage: &Usage,
    versions: &[TariffVersion],
    tz: Tz,
    calendar: &Calendar,
) -> Result<Vec<Part>, RatingError> {
    let mut parts = Vec::new();
    let mut date = usage.start.with_timezone(&tz).date_naive();
    while local_instant(tz, date, 0) < usage.end {
        let version = version_on(versions, date)?;
        let schedule = versions[version].schedule_for(date, calendar);
        let next_midnight = local_instant(tz, date.succ_opt().ok_or(RatingError::Overflow)?, 0);
        for (i, switch) in schedule.switches.iter().enumerate() {
            let from = local_instant(tz, date, u32::from(switch.minute));
            let to = schedule.switches.get(i + 1).map_or(next_midnight, |next| {
                local_instant(tz, date, u32::from(next.minute))
            });
            let (start, end) = (from.max(usage.start), to.min(usage.end));
            if start < end {
                parts.push(Part {
                    start,
                    end,
                    version,
                    period: switch.period,
                    local_date: date,
                });
            }
        }
        date = date.succ_opt().ok_or(RatingError::Overflow)?;
    }
    Ok(parts)
}

/// Splits `total` whole units in proportion to `weights` (all > 0): floors first, then one
/// leftover unit each to the largest fractional remainders, ties to the earlier index.
pub fn apportion(total: i64, weights: &[i64]) -> Vec<i64> {
    let sum: i128 = weights.iter().map(|&w| i128::from(w)).sum();
    if weights.is_empty() || sum <= 0 {
        return vec![0; weights.len()];
    }
    let total_wide = i128::from(total);
    let mut shares: Vec<i64> = Vec::with_capacity(weights.len());
    let mut fractions: Vec<(i128, usize)> = Vec::with_capacity(weights.len());
    for (i, &w) in weights.iter().enumerate() {
        let exact = total_wide * i128::from(w);
        shares.push(i64::try_from(exact / sum).expect("a share is at most the total"));
        fractions.push((exact % sum, i));
    }
    let given: i64 = shares.iter().sum();
    let leftover = usize::try_from(total - given).expect("floors never exceed the total");
    // Largest remainder first; equal remainders in index order.
    fractions.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in fractions.iter().take(leftover) {
        shares[i] += 1;
    }
    shares
}

fn duration_ms(part: &Part) -> i64 {
    (part.end - part.start).num_milliseconds().max(1)
}

/// Whole Wh per part: by duration, or by the meter's TOU registers per period.
fn energy_per_part(usage: &Usage, parts: &[Part]) -> Result<Vec<i64>, RatingError> {
    let Some(tou) = &usage.tou_wh else {
        let weights: Vec<i64> = parts.iter().map(duration_ms).collect();
        return Ok(apportion(usage.energy_wh.wh(), &weights));
    };
    let sum = tou.values().try_fold(0i64, |acc, &wh| match wh.wh() {
        wh if wh < 0 => None,
        wh => acc.checked_add(wh),
    });
    if sum != Some(usage.energy_wh.wh()) {
        return Err(RatingError::TouSplitSum);
    }
    let mut energies = vec![0; parts.len()];
    for (&period, &wh) in tou {
        let wh = wh.wh();
        let indices: Vec<usize> = (0..parts.len())
            .filter(|&i| parts[i].period == period)
            .collect();
        if indices.is_empty() {
            if wh > 0 {
                return Err(RatingError::TouSplitMismatch(period));
            }
            continue;
        }
        let weights: Vec<i64> = indices.iter().map(|&i| duration_ms(&parts[i])).collect();
        for (&i, share) in indices.iter().zip(apportion(wh, &weights)) {
            energies[i] = share;
        }
    }
    Ok(energies)
}

/// Rates one interval of a meter's usage against the plan `versions` (any order), in the
/// property's time zone `tz` and holiday `calendar`, from the account's `state`.
pub fn rate(
    usage: &Usage,
    versions: &[TariffVersion],
    tz: Tz,
    calendar: &Calendar,
    state: &RatingState,
) -> Result<Rated, RatingError> {
    if usage.end <= usage.start {
        return Err(RatingError::EmptyInterval);
    }
    if usage.end - usage.start > Duration::days(INTERVAL_DAYS_MAX) {
        return Err(RatingError::IntervalTooLong);
    }
    if usage.energy_wh.wh() < 0 {
        return Err(RatingError::NegativeEnergy);
    }
    let parts = split(usage, versions, tz, calendar)?;
    let energies = energy_per_part(usage, &parts)?;
    let mut state = *state;
    let mut lines = Vec::new();
    let mut total_e5 = i128::from(state.remainder_e5);
    for (part, wh) in parts.iter().zip(energies) {
        roll_counters(&mut state, part.local_date);
        if wh == 0 {
            continue;
        }
        let version = &versions[part.version];
        for (tier, energy_wh, price_units) in tier_pieces(version, part.period, &state, wh)? {
            let charge_e5 = energy_wh
                .checked_mul(price_units)
                .ok_or(RatingError::Overflow)?;
            total_e5 += i128::from(charge_e5);
            lines.push(ChargeLine {
                start: part.start,
                end: part.end,
                version: version.effective,
                period: part.period,
                tier,
                energy_wh: EnergyWh::from_wh(energy_wh),
                price_units,
                charge_e5,
            });
        }
        let wh = EnergyWh::from_wh(wh);
        state.month_wh = state
            .month_wh
            .checked_add(wh)
            .ok_or(RatingError::Overflow)?;
        state.year_wh = state.year_wh.checked_add(wh).ok_or(RatingError::Overflow)?;
    }
    let e5 = i128::from(E5_PER_FEN);
    let debit_fen = AmountFen::from_fen(
        i64::try_from(total_e5.div_euclid(e5)).map_err(|_| RatingError::Overflow)?,
    );
    state.remainder_e5 = i64::try_from(total_e5.rem_euclid(e5)).expect("a remainder below one fen");
    Ok(Rated {
        lines,
        debit_fen,
        state,
    })
}

/// Restarts the month and year counters when `date` is in a new local month or year.
fn roll_counters(state: &mut RatingState, date: NaiveDate) {
    let month = (date.year(), date.month());
    if state.month != Some(month) {
        state.month = Some(month);
        state.month_wh = EnergyWh::ZERO;
    }
    if state.year != Some(date.year()) {
        state.year = Some(date.year());
        state.year_wh = EnergyWh::ZERO;
    }
}

/// `wh` of one part split at tier thresholds: (tier index, Wh, price units) pieces.
fn tier_pieces(
    version: &TariffVersion,
    period: Period,
    state: &RatingState,
    wh: i64,
) -> Result<Vec<(usize, i64, i64)>, RatingError> {
    let base = version.price_of(period);
    let Some(tiers) = &version.tiers else {
        return Ok(vec![(0, wh, base)]);
    };
    let mut cumulative = match tiers.basis {
        TierBasis::Monthly => state.month_wh,
        TierBasis::Annual => state.year_wh,
    }
    .wh();
    let mut remaining = wh;
    let mut pieces = Vec::new();
    while remaining > 0 {
        let index = tiers
            .tiers
            .iter()
            .rposition(|t| t.from_wh <= cumulative)
            .unwrap_or(0);
        let room = tiers
            .tiers
            .get(index + 1)
            .map_or(i64::MAX, |next| next.from_wh - cumulative);
        let take = remaining.min(room);
        let price = match tiers.tiers[index].price {
            TierPrice::Absolute(price) => price,
            TierPrice::AddOn(add) => base.checked_add(add).ok_or(RatingError::Overflow)?,
        };
        pieces.push((index, take, price));
        cumulative = cumulative.checked_add(take).ok_or(RatingError::Overflow)?;
        remaining -= take;
    }
    Ok(pieces)
}

/// The whole fen a closing account pays for its last carried rest (half-up).
pub fn closing_fen(remainder_e5: i64) -> AmountFen {
    AmountFen::from_fen(i64::from(remainder_e5 >= E5_PER_FEN / 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tariff::{DaySchedule, Season, Switch, Tier, Tiers};
    use proptest::prelude::*;

    const SHANGHAI: Tz = chrono_tz::Asia::Shanghai;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    /// A UTC instant from a Shanghai local time.
    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        local_instant(SHANGHAI, date(y, m, d), h * 60 + min)
    }

    fn usage(start: DateTime<Utc>, end: DateTime<Utc>, energy_wh: i64) -> Usage {
        Usage {
            start,
            end,
            energy_wh: EnergyWh::from_wh(energy_wh),
            tou_wh: None,
        }
    }

    fn flat(price: i64) -> Vec<TariffVersion> {
        vec![TariffVersion::flat(date(2020, 1, 1), price)]
    }

    fn rate_flat(u: &Usage, price: i64, state: &RatingState) -> Rated {
        rate(u, &flat(price), SHANGHAI, &Calendar::default(), state).unwrap()
    }

    /// Valley until 08:00, flat 08:00–18:00, peak 18:00–22:00, valley after; all days alike.
    fn tou() -> TariffVersion {
        let s = |h: u16, period| Switch {
            minute: h * 60,
            period,
        };
        let day = DaySchedule {
            switches: vec![
                s(0, Period::Valley),
                s(8, Period::Flat),
                s(18, Period::Peak),
                s(22, Period::Valley),
            ],
        };
        TariffVersion {
            effective: date(2020, 1, 1),
            prices: BTreeMap::from([
                (Period::Peak, 14_800),
                (Period::Flat, 8_000),
                (Period::Valley, 3_200),
            ]),
            seasons: vec![Season {
                from: (1, 1),
                to: (12, 31),
                workday: day,
                holiday: None,
            }],
            tiers: None,
            fees: vec![],
        }
    }

    #[test]
    fn the_worked_example_of_the_design_carries_the_sub_fen_rest() {
        // 0.8123 yuan/kWh; 1,234 Wh then 766 Wh (DESIGN.md, Tariffs and rating).
        let first = rate_flat(
            &usage(at(2026, 11, 25, 10, 0), at(2026, 11, 25, 11, 0), 1234),
            8123,
            &RatingState::default(),
        );
        assert_eq!(
            first.lines.iter().map(|l| l.charge_e5).sum::<i64>(),
            10_023_782
        );
        assert_eq!(first.debit_fen.fen(), 100);
        assert_eq!(first.state.remainder_e5, 23_782);
        let second = rate_flat(
            &usage(at(2026, 11, 25, 11, 0), at(2026, 11, 25, 12, 0), 766),
            8123,
            &first.state,
        );
        assert_eq!(second.lines[0].charge_e5, 6_222_218);
        assert_eq!(second.debit_fen.fen(), 62);
        assert_eq!(second.state.remainder_e5, 46_000);
        // 2,000 Wh cost 162.46 fen: 162 debited, 0.46 carried; closing rounds 0.46 down.
        assert_eq!(first.debit_fen.fen() + second.debit_fen.fen(), 162);
        assert_eq!(closing_fen(second.state.remainder_e5), AmountFen::ZERO);
        assert_eq!(closing_fen(50_000), AmountFen::from_fen(1));
    }

    #[test]
    fn apportioning_gives_leftover_wh_to_the_largest_remainders_ties_to_the_earlier() {
        assert_eq!(apportion(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(apportion(2, &[1, 1, 1]), vec![1, 1, 0]);
        assert_eq!(apportion(7, &[1, 2, 4]), vec![1, 2, 4]);
        assert_eq!(apportion(5, &[3, 1]), vec![4, 1]); // 3.75 → 3 (+1), 1.25 → 1
        assert_eq!(apportion(0, &[5, 5]), vec![0, 0]);
    }

    #[test]
    fn a_tou_switch_inside_an_interval_is_honoured() {
        // 07:00–09:00 local, 2,000 Wh: the 08:00 switch splits it evenly, valley then flat.
        let r = rate(
            &usage(at(2026, 11, 25, 7, 0), at(2026, 11, 25, 9, 0), 2000),
            &[tou()],
            SHANGHAI,
            &Calendar::default(),
            &RatingState::default(),
        )
        .unwrap();
        let got: Vec<(Period, i64, i64)> = r
            .lines
            .iter()
            .map(|l| (l.period, l.energy_wh.wh(), l.price_units))
            .collect();
        assert_eq!(
            got,
            vec![(Period::Valley, 1000, 3_200), (Period::Flat, 1000, 8_000)]
        );
        assert_eq!(
            r.debit_fen.fen(),
            (1000 * 3_200 + 1000 * 8_000) / E5_PER_FEN
        );
    }

    #[test]
    fn the_meters_tou_registers_give_the_split_when_present() {
        let mut u = usage(at(2026, 11, 25, 7, 0), at(2026, 11, 25, 9, 0), 2000);
        u.tou_wh = Some(BTreeMap::from([
            (Period::Valley, EnergyWh::from_wh(300)),
            (Period::Flat, EnergyWh::from_wh(1700)),
        ]));
        let r = rate(
            &u,
            &[tou()],
            SHANGHAI,
            &Calendar::default(),
            &RatingState::default(),
        )
        .unwrap();
        assert_eq!(
            r.lines.iter().map(|l| l.energy_wh.wh()).collect::<Vec<_>>(),
            vec![300, 1700]
        );
        u.tou_wh = Some(BTreeMap::from([
            (Period::Valley, EnergyWh::from_wh(300)),
            (Period::Flat, EnergyWh::from_wh(1600)),
        ]));
        assert_eq!(
            rate(
                &u,
                &[tou()],
                SHANGHAI,
                &Calendar::default(),
                &RatingState::default()
            ),
            Err(RatingError::TouSplitSum)
        );
        u.tou_wh = Some(BTreeMap::from([(Period::Peak, EnergyWh::from_wh(2000))]));
        assert_eq!(
            rate(
                &u,
                &[tou()],
                SHANGHAI,
                &Calendar::default(),
                &RatingState::default()
            ),
            Err(RatingError::TouSplitMismatch(Period::Peak))
        );
    }

    #[test]
    fn a_version_boundary_at_local_midnight_is_honoured() {
        let versions = vec![
            TariffVersion::flat(date(2026, 1, 1), 8_000),
            TariffVersion::flat(date(2026, 12, 1), 9_000),
        ];
        let u = usage(at(2026, 11, 30, 23, 0), at(2026, 12, 1, 1, 0), 2000);
        let r = rate(
            &u,
            &versions,
            SHANGHAI,
            &Calendar::default(),
            &RatingState::default(),
        )
        .unwrap();
        let got: Vec<(NaiveDate, i64, i64)> = r
            .lines
            .iter()
            .map(|l| (l.version, l.energy_wh.wh(), l.price_units))
            .collect();
        assert_eq!(
            got,
            vec![
                (date(2026, 1, 1), 1000, 8_000),
                (date(2026, 12, 1), 1000, 9_000)
            ]
        );
        // Before the first version there is no price: an error, not a free kWh.
        let early = usage(at(2025, 12, 31, 23, 0), at(2026, 1, 1, 1, 0), 10);
        assert_eq!(
            rate(
                &early,
                &versions,
                SHANGHAI,
                &Calendar::default(),
                &RatingState::default()
            ),
            Err(RatingError::NoVersion(date(2025, 12, 31)))
        );
    }

    fn tiered(basis: TierBasis) -> Vec<TariffVersion> {
        let mut v = TariffVersion::flat(date(2020, 1, 1), 5_000);
        v.tiers = Some(Tiers {
            basis,
            tiers: vec![
                Tier {
                    from_wh: 0,
                    price: TierPrice::AddOn(0),
                },
                Tier {
                    from_wh: 240_000,
                    price: TierPrice::AddOn(500),
                },
                Tier {
                    from_wh: 400_000,
                    price: TierPrice::Absolute(8_000),
                },
            ],
        });
        vec![v]
    }

    #[test]
    fn a_tier_threshold_inside_an_interval_splits_the_energy_exactly() {
        let state = RatingState {
            month: Some((2026, 11)),
            month_wh: EnergyWh::from_wh(239_500),
            year: Some(2026),
            year_wh: EnergyWh::from_wh(239_500),
            remainder_e5: 0,
        };
        let u = usage(at(2026, 11, 25, 10, 0), at(2026, 11, 25, 11, 0), 1000);
        let r = rate(
            &u,
            &tiered(TierBasis::Monthly),
            SHANGHAI,
            &Calendar::default(),
            &state,
        )
        .unwrap();
        let got: Vec<(usize, i64, i64)> = r
            .lines
            .iter()
            .map(|l| (l.tier, l.energy_wh.wh(), l.price_units))
            .collect();
        assert_eq!(got, vec![(0, 500, 5_000), (1, 500, 5_500)]);
        assert_eq!(r.state.month_wh.wh(), 240_500);
        // Across two thresholds at once, the absolute tier replaces the base price.
        let big = usage(at(2026, 11, 25, 10, 0), at(2026, 11, 25, 11, 0), 200_000);
        let r = rate(
            &big,
            &tiered(TierBasis::Monthly),
            SHANGHAI,
            &Calendar::default(),
            &state,
        )
        .unwrap();
        let got: Vec<(usize, i64, i64)> = r
            .lines
            .iter()
            .map(|l| (l.tier, l.energy_wh.wh(), l.price_units))
            .collect();
        assert_eq!(
            got,
            vec![(0, 500, 5_000), (1, 160_000, 5_500), (2, 39_500, 8_000)]
        );
    }

    #[test]
    fn month_to_date_restarts_at_local_midnight_on_the_first_but_year_to_date_does_not() {
        let state = RatingState {
            month: Some((2026, 11)),
            month_wh: EnergyWh::from_wh(300_000),
            year: Some(2026),
            year_wh: EnergyWh::from_wh(300_000),
            remainder_e5: 0,
        };
        // 23:00 on 30 Nov to 01:00 on 1 Dec local: the second hour starts a new month.
        let u = usage(at(2026, 11, 30, 23, 0), at(2026, 12, 1, 1, 0), 2000);
        let monthly = rate(
            &u,
            &tiered(TierBasis::Monthly),
            SHANGHAI,
            &Calendar::default(),
            &state,
        )
        .unwrap();
        let tiers: Vec<(usize, i64)> = monthly
            .lines
            .iter()
            .map(|l| (l.tier, l.energy_wh.wh()))
            .collect();
        assert_eq!(tiers, vec![(1, 1000), (0, 1000)]);
        assert_eq!(
            (monthly.state.month, monthly.state.month_wh),
            (Some((2026, 12)), EnergyWh::from_wh(1000))
        );
        let annual = rate(
            &u,
            &tiered(TierBasis::Annual),
            SHANGHAI,
            &Calendar::default(),
            &state,
        )
        .unwrap();
        assert!(annual.lines.iter().all(|l| l.tier == 1));
        assert_eq!(annual.state.year_wh.wh(), 302_000);
    }

    #[test]
    fn bad_intervals_are_errors_not_charges() {
        let s = RatingState::default();
        let t = at(2026, 11, 25, 10, 0);
        let versions = flat(8_000);
        let cal = Calendar::default();
        assert_eq!(
            rate(&usage(t, t, 5), &versions, SHANGHAI, &cal, &s),
            Err(RatingError::EmptyInterval)
        );
        assert_eq!(
            rate(
                &usage(t, t + Duration::hours(1), -5),
                &versions,
                SHANGHAI,
                &cal,
                &s
            ),
            Err(RatingError::NegativeEnergy)
        );
        assert_eq!(
            rate(
                &usage(t, t + Duration::days(401), 5),
                &versions,
                SHANGHAI,
                &cal,
                &s
            ),
            Err(RatingError::IntervalTooLong)
        );
    }

    proptest! {
        #[test]
        fn apportioning_neither_loses_nor_creates_wh(total in 0i64..10_000_000, weights in prop::collection::vec(1i64..100_000_000, 1..40)) {
            let shares = apportion(total, &weights);
            prop_assert_eq!(shares.iter().sum::<i64>(), total);
            let sum: i128 = weights.iter().map(|&w| i128::from(w)).sum();
            for (share, &w) in shares.iter().zip(&weights) {
                let exact_floor = i128::from(total) * i128::from(w) / sum;
                prop_assert!(i128::from(*share) == exact_floor || i128::from(*share) == exact_floor + 1);
            }
        }

        #[test]
        fn debits_plus_the_final_rest_equal_the_exact_total(
            energies in prop::collection::vec(0i64..50_000, 1..30),
            minutes in prop::collection::vec(1i64..600, 30),
            tiered_plan in any::<bool>(),
        ) {
            let versions = if tiered_plan { tiered(TierBasis::Monthly) } else { vec![tou()] };
            let mut state = RatingState::default();
            let mut start = at(2026, 11, 28, 20, 0);
            let (mut debits, mut exact) = (0i128, 0i128);
            for (i, &wh) in energies.iter().enumerate() {
                let end = start + Duration::minutes(minutes[i]);
                let r = rate(&usage(start, end, wh), &versions, SHANGHAI, &Calendar::default(), &state).unwrap();
                prop_assert_eq!(r.lines.iter().map(|l| l.energy_wh.wh()).sum::<i64>(), wh);
                debits += i128::from(r.debit_fen.fen());
                exact += r.lines.iter().map(|l| i128::from(l.charge_e5)).sum::<i128>();
                prop_assert!((0..E5_PER_FEN).contains(&r.state.remainder_e5));
                state = r.state;
                start = end;
            }
            prop_assert_eq!(debits * i128::from(E5_PER_FEN) + i128::from(state.remainder_e5), exact);
        }

        #[test]
        fn under_a_flat_price_the_total_depends_only_on_the_energy(
            pieces in prop::collection::vec((1i64..2_000, 0i64..20_000), 1..20),
            price in 0i64..20_000,
        ) {
            let total_wh: i64 = pieces.iter().map(|p| p.1).sum();
            let mut start = at(2026, 11, 30, 22, 0);
            let whole = rate_flat(&usage(start, start + Duration::minutes(pieces.iter().map(|p| p.0).sum()), total_wh), price, &RatingState::default());
            let mut state = RatingState::default();
            let mut debits = 0;
            for &(minutes, wh) in &pieces {
                let end = start + Duration::minutes(minutes);
                let r = rate_flat(&usage(start, end, wh), price, &state);
                debits += r.debit_fen.fen();
                state = r.state;
                start = end;
            }
            prop_assert_eq!(debits, whole.debit_fen.fen());
            prop_assert_eq!(state.remainder_e5, whole.state.remainder_e5);
            prop_assert_eq!(i128::from(whole.debit_fen.fen()) * 100_000 + i128::from(whole.state.remainder_e5), i128::from(total_wh) * i128::from(price));
        }

        #[test]
        fn more_energy_never_costs_less_with_increasing_tiers(month_wh in 0i64..600_000, a in 0i64..300_000, extra in 0i64..300_000) {
            let state = RatingState { month: Some((2026, 11)), month_wh: EnergyWh::from_wh(month_wh), year: Some(2026), year_wh: EnergyWh::from_wh(month_wh), remainder_e5: 0 };
            let cost = |wh: i64| {
                let r = rate(&usage(at(2026, 11, 25, 10, 0), at(2026, 11, 25, 11, 0), wh), &tiered(TierBasis::Monthly), SHANGHAI, &Calendar::default(), &state).unwrap();
                r.lines.iter().map(|l| l.charge_e5).sum::<i64>()
            };
            let (smaller, larger) = (cost(a), cost(a + extra));
            prop_assert!(larger >= smaller);
            // The marginal price never falls: the extra Wh cost at least the average of the first.
            if a > 0 && extra > 0 {
                prop_assert!(i128::from(larger - smaller) * i128::from(a) >= i128::from(smaller) * i128::from(extra));
            }
        }
    }
}
