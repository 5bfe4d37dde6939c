//! Power follows money for platform-side accounts (DESIGN.md: Alarms, trip and restore). The
//! rules are one pure function, [`decide`]: from an account's available balance, its levels and
//! what was already done (alarms fired, trip notice given, tripped), what to do now — alarm 1,
//! alarm 2, the trip notice, the trip, the restore. Alarms fire once per downward crossing and
//! re-arm only above their level; the trip follows `trip_notice_s` after the notice if the
//! condition still holds, is postponed through quiet hours and holidays unless the arrears pass
//! the company's cap, and a meter under keep-power is never tripped; the restore (close) comes at
//! the restore level, for every meter of the account. The database side (`evaluate`, `db`
//! feature) runs the rules for one account under a row lock and turns actions into typed
//! commands (`rule:balance`) and tenant messages; [`relay`] compares each meter's latest reading
//! with the state the rules intend and sends again what was lost.

#[cfg(feature = "db")]
mod evaluate;
#[cfg(feature = "db")]
pub use evaluate::*;
#[cfg(feature = "db")]
pub mod batch;
#[cfg(feature = "db")]
pub mod centre;
#[cfg(feature = "db")]
mod confirm;
#[cfg(feature = "db")]
pub mod control;
#[cfg(feature = "db")]
pub mod emergency;
#[cfg(feature = "db")]
pub mod levels;
#[cfg(feature = "db")]
pub mod messages;
#[cfg(feature = "db")]
pub mod relay;

use crate::kernel::money::AmountFen;
use chrono::{DateTime, Duration, Utc};

/// An account's levels: alarm 1 ≥ alarm 2 ≥ 0 ≥ trip (= −overdraft limit); restore > trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    pub alarm1: AmountFen,
    pub alarm2: AmountFen,
    pub trip: AmountFen,
    pub restore: AmountFen,
}

impl Levels {
    /// DESIGN.md's order of the levels; settings validation keeps it, this checks it.
    pub fn are_ordered(&self) -> bool {
        self.alarm1 >= self.alarm2
            && self.alarm2 >= AmountFen::ZERO
            && AmountFen::ZERO >= self.trip
            && self.restore > self.trip
    }
}

/// What was already done for an account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PowerState {
    pub alarm1_fired: bool,
    pub alarm2_fired: bool,
    /// When the trip notice was given (the trip condition first held).
    pub noticed_at: Option<DateTime<Utc>>,
    /// The account's meters were sent a trip and not yet a restore.
    pub tripped: bool,
}

/// The moment the rules look at.
#[derive(Debug, Clone, Copy)]
pub struct Situation {
    pub available: AmountFen,
    pub now: DateTime<Utc>,
    /// How long after the notice the trip follows.
    pub notice: Duration,
    /// Inside quiet hours or on a holiday (automatic trips wait).
    pub quiet: bool,
    /// Most arrears a postponed trip may let the shop run up.
    pub arrears_cap: AmountFen,
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Alarm1,
    Alarm2,
    TripNotice,
    Trip,
    Restore,
}

impl Action {
    /// The message kind a tenant is told.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Alarm1 => "alarm1",
            Action::Alarm2 => "alarm2",
            Action::TripNotice => "trip_notice",
            Action::Trip => "tripped",
            Action::Restore => "restored",
        }
    }
}

/// The rules (DESIGN.md: Alarms, trip and restore), deterministic and without I/O.
pub fn decide(levels: &Levels, state: PowerState, s: &Situation) -> (PowerState, Vec<Action>) {
    debug_assert!(levels.are_ordered(), "levels out of order: {levels:?}");
    let mut next = state;
    let mut actions = Vec::new();
    // Alarms: once per downward crossing, re-armed only above the level. A drop past both at
    // once is one message, the more urgent one.
    let crossed1 = s.available <= levels.alarm1 && !state.alarm1_fired;
    let crossed2 = s.available <= levels.alarm2 && !state.alarm2_fired;
    next.alarm1_fired = s.available <= levels.alarm1;
    next.alarm2_fired = s.available <= levels.alarm2;
    if crossed2 {
        actions.push(Action::Alarm2);
    } else if crossed1 {
        actions.push(Action::Alarm1);
    }
    if state.tripped {
        if s.available >= levels.restore {
            next.tripped = false;
            next.noticed_at = None;
            actions.push(Action::Restore);
        }
        return (next, actions);
    }
    if s.available > levels.trip {
        // Paid before the notice ran out: no trip, and a later drop gives a fresh notice.
        next.noticed_at = None;
        return (next, actions);
    }
    let noticed_at = match state.noticed_at {
        None => {
            next.noticed_at = Some(s.now);
            actions.push(Action::TripNotice);
            s.now
        }
        Some(at) => at,
    };
    // A zero notice trips in the same step (nothing to wait for); otherwise once it ran out.
    if s.now - noticed_at >= s.notice {
        let arrears = AmountFen::ZERO
            .checked_sub(s.available)
            .unwrap_or(AmountFen::from_fen(i64::MAX));
        if !s.quiet || arrears > s.arrears_cap {
            next.tripped = true;
            actions.push(Action::Trip);
        }
    }
    (next, actions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fen(v: i64) -> AmountFen {
        AmountFen::from_fen(v)
    }

    const LEVELS: Levels = Levels {
        alarm1: AmountFen::from_fen(5_000),
        alarm2: AmountFen::from_fen(2_000),
        trip: AmountFen::from_fen(-1_000),
        restore: AmountFen::from_fen(0),
    };

    fn at(available: i64, minute: i64) -> Situation {
        Situation {
            available: fen(available),
            now: DateTime::<Utc>::from_timestamp(1_800_000_000 + 60 * minute, 0).unwrap(),
            notice: Duration::seconds(600),
            quiet: false,
            arrears_cap: fen(10_000),
        }
    }

    /// Runs the rules over a sequence of (available fen, minute); the actions in order.
    fn run(steps: &[(i64, i64)], quiet: bool) -> Vec<(i64, Action)> {
        let mut state = PowerState::default();
        let mut done = Vec::new();
        for &(available, minute) in steps {
            let s = Situation {
                quiet,
                ..at(available, minute)
            };
            let (next, actions) = decide(&LEVELS, state, &s);
            done.extend(actions.into_iter().map(|a| (minute, a)));
            state = next;
        }
        done
    }

    #[test]
    fn a_zero_notice_gives_the_notice_and_trips_in_the_same_step() {
        let s = Situation {
            notice: Duration::zero(),
            ..at(-1_000, 0)
        };
        let (next, actions) = decide(&LEVELS, PowerState::default(), &s);
        assert_eq!(
            actions,
            vec![Action::Alarm2, Action::TripNotice, Action::Trip]
        );
        assert!(next.tripped);
        // Quiet hours still postpone it.
        let quiet = Situation { quiet: true, ..s };
        let (next, actions) = decide(&LEVELS, PowerState::default(), &quiet);
        assert_eq!(actions, vec![Action::Alarm2, Action::TripNotice]);
        assert!(!next.tripped);
    }

    #[test]
    fn alarms_fire_once_per_downward_crossing_and_rearm_only_above() {
        let done = run(
            &[
                (6_000, 0),
                (4_999, 1),
                (4_000, 2),
                (5_000, 3),
                (4_500, 4),
                (5_001, 5),
                (4_900, 6),
            ],
            false,
        );
        // 5,000 is still at the level: no re-arm there, so 4,500 stays quiet.
        assert_eq!(done, vec![(1, Action::Alarm1), (6, Action::Alarm1)]);
        let done = run(&[(6_000, 0), (1_000, 1), (1_500, 2), (4_000, 3)], false);
        assert_eq!(
            done,
            vec![(1, Action::Alarm2)],
            "a drop past both is one message"
        );
    }

    #[test]
    fn the_trip_follows_the_notice_and_a_payment_in_between_cancels_it() {
        let done = run(
            &[
                (100, 0),
                (-1_000, 1),
                (-1_200, 5),
                (-1_300, 11),
                (-1_400, 12),
            ],
            false,
        );
        assert_eq!(
            done,
            vec![
                (0, Action::Alarm2),
                (1, Action::TripNotice),
                (11, Action::Trip)
            ]
        );
        let done = run(
            &[
                (-1_000, 0),
                (500, 5),
                (-1_000, 20),
                (-1_000, 29),
                (-1_000, 30),
            ],
            false,
        );
        assert_eq!(
            done,
            vec![
                (0, Action::Alarm2),
                (0, Action::TripNotice),
                (20, Action::TripNotice),
                (30, Action::Trip)
            ],
            "the payment cancelled the first notice (alarm 2 never re-armed: ¥5 is below it); the second notice runs its 10 minutes"
        );
    }

    #[test]
    fn the_restore_comes_at_the_restore_level_not_before() {
        let done = run(
            &[(-2_000, 0), (-2_000, 10), (-500, 11), (0, 12), (-2_000, 13)],
            false,
        );
        assert_eq!(
            done,
            vec![
                (0, Action::Alarm2),
                (0, Action::TripNotice),
                (10, Action::Trip),
                (12, Action::Restore),
                (13, Action::TripNotice)
            ],
            "above the trip level but below restore stays off; after a restore a new notice"
        );
    }

    #[test]
    fn quiet_hours_postpone_the_trip_until_the_arrears_pass_the_cap() {
        let done = run(
            &[(-2_000, 0), (-2_000, 10), (-9_999, 60), (-10_001, 70)],
            true,
        );
        assert_eq!(
            done,
            vec![
                (0, Action::Alarm2),
                (0, Action::TripNotice),
                (70, Action::Trip)
            ]
        );
    }

    #[test]
    fn levels_keep_designs_order() {
        assert!(LEVELS.are_ordered());
        let bad = Levels {
            restore: fen(-1_000),
            ..LEVELS
        };
        assert!(!bad.are_ordered(), "restore must be above the trip level");
    }
}
