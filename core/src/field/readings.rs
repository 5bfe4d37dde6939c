//! The rules that judge a reading against the meter's previous one (DESIGN.md: Tariffs and
//! rating, the flag table). Ingest classifies every reading it stores with them, and billing's
//! review of held readings applies the same rules, so they live here, with no storage.
//!
//! A plausible, in-order delta and a register rollover count as consumption; resets, gaps,
//! jumps and ratio mismatches are held (counted nothing until an operator releases or corrects
//! them). Every stored reading except an out-of-order one is the baseline for the next.

use crate::tariff::Period;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// A longer silence is a gap: its energy is not spread over time as consumption.
pub const GAP_SECONDS: i64 = 24 * 3600;
/// Average power above this between two readings is an implausible jump (5 MW).
pub const JUMP_POWER_W: i64 = 5_000_000;
/// Register ranges of the meters we know: a fall from the top tenth to the bottom tenth of one
/// is a rollover, any other fall a reset. (Acrel u32 × 0.01 kWh; DL/T 645 999999.99 kWh.)
pub const REGISTER_MAX_WH: [i64; 2] = [42_949_672_950, 999_999_990];

/// A meter's TOU energy registers as drivers report them: Wh per period, in [`Period::ALL`]
/// order (sharp, peak, flat, valley, deep valley); `None` where the meter has no register.
pub type TouRegisters = [Option<i64>; 5];

/// The energy of an interval per TOU period by the meter's own registers (used where the meter's
/// `tou_registers_match` is on, DESIGN.md): each register's increase between the interval's two
/// readings. `None` — use the plan's clock instead — when the two readings do not have the same
/// registers, a register went down, or the increases do not add up to the interval's counted
/// energy (a register that lags the total by a rounding step, a rollover).
pub fn tou_split(
    previous: &TouRegisters,
    current: &TouRegisters,
    counted_wh: i64,
) -> Option<BTreeMap<Period, i64>> {
    let mut split = BTreeMap::new();
    for ((period, before), after) in Period::ALL.iter().zip(previous).zip(current) {
        match (before, after) {
            (Some(before), Some(after)) => {
                let delta = after.checked_sub(*before).filter(|d| *d >= 0)?;
                split.insert(*period, delta);
            }
            (None, None) => {}
            _ => return None,
        }
    }
    let sum = split
        .values()
        .try_fold(0i64, |acc, wh| acc.checked_add(*wh))?;
    (!split.is_empty() && sum == counted_wh).then_some(split)
}

/// A meter's newest counted reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Previous {
    pub read_at: DateTime<Utc>,
    pub energy_wh: i64,
}

/// How a reading relates to the meter's previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The first reading of a meter: a starting point, no consumption.
    First,
    /// A plausible delta (≥ 0 Wh) after the previous reading: consumption.
    Consumption(i64),
    /// The register passed its maximum and started again: max − previous + new Wh, counted at
    /// once and stored with the flag `rollover`.
    Rollover(i64),
    /// Same time as the previous reading.
    Duplicate,
    /// Stored with this flag, not counted.
    Flagged(&'static str),
}

impl Class {
    /// The flag the reading is stored with.
    pub fn flag(self) -> Option<&'static str> {
        match self {
            Class::Flagged(flag) => Some(flag),
            Class::Rollover(_) => Some("rollover"),
            _ => None,
        }
    }

    /// The energy the interval ending at this reading counts, if any.
    pub fn counted_wh(self) -> Option<i64> {
        match self {
            Class::Consumption(wh) | Class::Rollover(wh) => Some(wh),
            _ => None,
        }
    }

    /// Whether the reading is the baseline for the next: every stored reading but one older
    /// than the baseline (DESIGN.md: "every flagged reading … becomes the baseline").
    pub fn moves_baseline(self) -> bool {
        !matches!(self, Class::Duplicate | Class::Flagged("out_of_order"))
    }
}

/// Classifies a reading against the meter's previous stored reading (its baseline).
pub fn classify(
    previous: Option<Previous>,
    read_at: DateTime<Utc>,
    energy_wh: i64,
    ratio_mismatch: bool,
) -> Class {
    if ratio_mismatch {
        return Class::Flagged("ratio_mismatch");
    }
    let Some(prev) = previous else {
        return Class::First;
    };
    if read_at == prev.read_at {
        return Class::Duplicate;
    }
    if read_at < prev.read_at {
        return Class::Flagged("out_of_order");
    }
    let delta = energy_wh - prev.energy_wh;
    if delta < 0 {
        let rolled_over = REGISTER_MAX_WH
            .iter()
            .find(|&&max| prev.energy_wh > max / 10 * 9 && (0..max / 10).contains(&energy_wh));
        return match rolled_over {
            Some(max) => Class::Rollover(max - prev.energy_wh + energy_wh),
            None => Class::Flagged("reset"),
        };
    }
    let seconds = (read_at - prev.read_at).num_seconds();
    if seconds > GAP_SECONDS {
        return Class::Flagged("gap");
    }
    // delta Wh over `seconds` s is delta × 3600 / seconds W.
    if i128::from(delta) * 3600 > i128::from(JUMP_POWER_W) * i128::from(seconds.max(1)) {
        return Class::Flagged("jump");
    }
    Class::Consumption(delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_028_800 + seconds, 0).unwrap()
    }

    #[test]
    fn readings_are_classified_against_the_previous_one() {
        let prev = Some(Previous {
            read_at: at(0),
            energy_wh: 1_000_000,
        });
        assert_eq!(classify(None, at(0), 5, false), Class::First);
        assert_eq!(
            classify(prev, at(30), 1_000_050, false),
            Class::Consumption(50)
        );
        assert_eq!(classify(prev, at(0), 1_000_000, false), Class::Duplicate);
        assert_eq!(
            classify(prev, at(-30), 999_990, false),
            Class::Flagged("out_of_order")
        );
        assert_eq!(classify(prev, at(30), 10, false), Class::Flagged("reset"));
        assert_eq!(
            classify(prev, at(GAP_SECONDS + 1), 1_000_100, false),
            Class::Flagged("gap")
        );
        // 5 MW for 30 s is 41,666 Wh: a little more is a jump.
        assert_eq!(
            classify(prev, at(30), 1_041_666, false),
            Class::Consumption(41_666)
        );
        assert_eq!(
            classify(prev, at(30), 1_041_668, false),
            Class::Flagged("jump")
        );
        assert_eq!(
            classify(prev, at(30), 1_000_050, true),
            Class::Flagged("ratio_mismatch")
        );
        let near_top = Some(Previous {
            read_at: at(0),
            energy_wh: 999_999_000,
        });
        // Rollover: the register's maximum (999,999.99 kWh) − previous + new, counted at once.
        let rolled = classify(near_top, at(30), 500, false);
        assert_eq!(rolled, Class::Rollover(999_999_990 - 999_999_000 + 500));
        assert_eq!(
            (rolled.flag(), rolled.counted_wh()),
            (Some("rollover"), Some(1_490))
        );
        // Every stored reading but an out-of-order one is the next one's baseline.
        assert!(
            Class::Flagged("reset").moves_baseline() && Class::Flagged("jump").moves_baseline()
        );
        assert!(
            !Class::Flagged("out_of_order").moves_baseline() && !Class::Duplicate.moves_baseline()
        );
    }

    #[test]
    fn the_registers_split_an_interval_only_when_they_add_up() {
        let before = [Some(100), Some(1_000), Some(2_000), Some(50), None];
        let after = [Some(100), Some(1_030), Some(2_010), Some(50), None];
        let split = tou_split(&before, &after, 40).unwrap();
        assert_eq!(split[&Period::Peak], 30);
        assert_eq!(split[&Period::Flat], 10);
        assert_eq!(split.get(&Period::DeepValley), None);
        assert_eq!(tou_split(&before, &after, 41), None, "does not add up");
        let down = [Some(99), Some(1_030), Some(2_010), Some(50), None];
        assert_eq!(tou_split(&before, &down, 40), None, "a register went down");
        let fewer = [None, Some(1_030), Some(2_010), Some(50), None];
        assert_eq!(tou_split(&before, &fewer, 40), None, "registers differ");
        assert_eq!(tou_split(&[None; 5], &[None; 5], 0), None, "no registers");
    }
}
