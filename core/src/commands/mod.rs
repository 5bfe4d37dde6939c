//! The command queue (DESIGN.md: Commands): what people and rules ask of meters — trip, close,
//! keep power, read now, purchases — and how each request moves from `queued` to a final state.
//!
//! The vocabulary ([`Op`], [`State`], which transitions are legal, what "verified" means per
//! command) is plain data here, compiled everywhere. The queue itself (enqueue with NOTIFY,
//! atomic claim, settle, expiry, lease recovery, verification by stored readings) is in `queue`
//! (`db` feature). Transports — the DTU bus, Modbus-TCP, MQTT — only move bytes: they claim a
//! command here, carry it out and report the outcome back through the same functions, so a
//! command can never be sent twice by two processes or settled by a transition DESIGN.md does
//! not allow.

#[cfg(feature = "db")]
mod queue;
#[cfg(feature = "db")]
pub use queue::*;

use serde::{Deserialize, Serialize};

/// What a command asks of a meter: one canonical list, mapped to each transport by its driver.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Trip,
    Close,
    Release,
    KeepPowerOn,
    KeepPowerOff,
    Purchase,
    ReadNow,
    SyncClock,
    Deduct,
    SetPrice,
    SetTouTable,
    SetPrepaidParams,
}

/// How a command is known to have taken effect (DESIGN.md: the "verified when" table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// A reading read at or after the command was sent is stored.
    ReadingAfterSend,
    /// A later reading (or an ack carrying `relay`) shows the relay closed (`true`) or open.
    Relay { closed: bool },
    /// The acknowledgement is all there is: nothing to read back.
    Ack,
    /// The meter's clock reads back within ±5 s.
    ClockReadBack,
    /// The counters read back the new price.
    PriceReadBack,
    /// The secure counters read back the expected count.
    SecureCount,
    /// The parameters written read back equal.
    ParamsReadBack,
}

impl Op {
    pub const ALL: [Op; 12] = [
        Op::Trip,
        Op::Close,
        Op::Release,
        Op::KeepPowerOn,
        Op::KeepPowerOff,
        Op::Purchase,
        Op::ReadNow,
        Op::SyncClock,
        Op::Deduct,
        Op::SetPrice,
        Op::SetTouTable,
        Op::SetPrepaidParams,
    ];

    /// The one string form (database, API, MQTT `op`).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Trip => "trip",
            Op::Close => "close",
            Op::Release => "release",
            Op::KeepPowerOn => "keep_power_on",
            Op::KeepPowerOff => "keep_power_off",
            Op::Purchase => "purchase",
            Op::ReadNow => "read_now",
            Op::SyncClock => "sync_clock",
            Op::Deduct => "deduct",
            Op::SetPrice => "set_price",
            Op::SetTouTable => "set_tou_table",
            Op::SetPrepaidParams => "set_prepaid_params",
        }
    }

    pub fn parse(text: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == text)
    }

    /// How this command is verified.
    pub fn proof(self) -> Proof {
        match self {
            Op::ReadNow => Proof::ReadingAfterSend,
            Op::Trip => Proof::Relay { closed: false },
            Op::Close | Op::KeepPowerOn => Proof::Relay { closed: true },
            Op::Release | Op::KeepPowerOff => Proof::Ack,
            Op::SyncClock => Proof::ClockReadBack,
            Op::SetPrice => Proof::PriceReadBack,
            Op::Purchase | Op::Deduct => Proof::SecureCount,
            Op::SetTouTable | Op::SetPrepaidParams => Proof::ParamsReadBack,
        }
    }

    /// Money moves with these: they never expire (the same stored bytes are resent until
    /// verified) and at most one is in flight per meter.
    pub fn moves_money(self) -> bool {
        matches!(self, Op::Purchase | Op::Deduct)
    }

    /// These exist only as secure frames (SECURE-COMMAND.md): built by the server for a
    /// meter-side meter and carried byte for byte.
    pub fn is_secure_only(self) -> bool {
        matches!(self, Op::Purchase | Op::Deduct | Op::SetPrice)
    }

    /// Relay control: a newer one cancels a queued opposite one.
    pub fn is_control(self) -> bool {
        matches!(
            self,
            Op::Trip | Op::Close | Op::Release | Op::KeepPowerOn | Op::KeepPowerOff
        )
    }

    /// The queued commands a new `self` supersedes: any other queued control command of the
    /// meter (the newest wish about the relay wins; "trip, then close" queued together would
    /// otherwise flap the shop's power).
    pub fn supersedes(self) -> Vec<Op> {
        if !self.is_control() {
            return Vec::new();
        }
        Op::ALL
            .into_iter()
            .filter(|op| op.is_control() && *op != self)
            .collect()
    }

    /// The state a positive acknowledgement (`done`) moves the command to: verified when the
    /// ack itself is the proof (or carries the relay state the command wanted), acknowledged
    /// otherwise (the proof comes with a reading).
    pub fn state_after_done(self, relay_closed: Option<bool>) -> State {
        match (self.proof(), relay_closed) {
            (Proof::Ack, _) => State::Verified,
            (Proof::Relay { closed }, Some(seen)) if seen == closed => State::Verified,
            _ => State::Acknowledged,
        }
    }
}

/// How a meter is reached, as far as commands care: which driver speaks to it on a bus (DTU or
/// Modbus-TCP), or an MQTT gateway that takes the canonical `op`s itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Bus(crate::field::vocabulary::MeterModel),
    Mqtt,
}

impl Route {
    /// The route of a meter of `model` behind a gateway of `kind`.
    pub fn of(
        model: crate::field::vocabulary::MeterModel,
        kind: crate::field::vocabulary::GatewayKind,
    ) -> Route {
        match kind {
            crate::field::vocabulary::GatewayKind::Mqtt => Route::Mqtt,
            _ => Route::Bus(model),
        }
    }
}

/// Whether `op` can reach a meter by `route` today (DESIGN.md: Commands, "per driver"). Relay
/// commands and read-now reach every meter. `sync_clock`: DL/T 645 (08H broadcast) and MQTT
/// gateways; Acrel's clock register is undocumented. Secure frames (purchase, deduct, set price):
/// MQTT gateways, and Modbus meters on buses (0x0C00; the simulator's meter-side meters) — not
/// DL/T 645 or generic Modbus maps, which have no secure register. `set_tou_table` and
/// `set_prepaid_params` reach no meter: the only register maps for them are marked "verify" in
/// DOMAIN.md, and a platform-side meter needs neither (the platform rates and keeps the levels).
/// Asking for an op a route cannot carry is refused when it is asked, rather than left queued
/// until it expires.
pub fn carried(op: Op, route: Route) -> bool {
    use crate::field::vocabulary::MeterModel;
    match op {
        Op::ReadNow | Op::Trip | Op::Close | Op::Release | Op::KeepPowerOn | Op::KeepPowerOff => {
            true
        }
        Op::SyncClock => matches!(route, Route::Mqtt | Route::Bus(MeterModel::Dlt645)),
        Op::Purchase | Op::Deduct | Op::SetPrice => matches!(
            route,
            Route::Mqtt | Route::Bus(MeterModel::Dtsy1352 | MeterModel::Ddsy1352)
        ),
        Op::SetTouTable | Op::SetPrepaidParams => false,
    }
}

/// Whether `op` reaches every meter, whatever its route (no need to look the meter up).
pub fn carried_everywhere(op: Op) -> bool {
    carried(op, Route::Mqtt)
        && crate::field::vocabulary::MeterModel::ALL
            .iter()
            .all(|model| carried(op, Route::Bus(*model)))
}

/// How many times a bus sends a relay command that gets no answer before it fails.
pub const CONTROL_SENDS_MAX: i32 = 4;

/// The status a DL/T 645 meter reports (among a reading's alarms) when its relay is open with
/// the trip command cleared — "close allowed" (1B): the relay closes at the tenant's button. A
/// `close` is verified by it (DESIGN.md's table), and the intended state "closed" agrees with it.
pub const CLOSE_ALLOWED: &str = "close_allowed";

/// The wait before the next send of a command sent `attempts` times without an answer (5 s,
/// 15 s, 45 s), or `None` once [`CONTROL_SENDS_MAX`] sends went unanswered. Growing waits let a
/// bus that lost power or a meter that rebooted come back without flooding the line.
pub fn retry_backoff_s(attempts: i32) -> Option<i64> {
    if !(1..CONTROL_SENDS_MAX).contains(&attempts) {
        return None;
    }
    Some(5 * 3_i64.pow(u32::try_from(attempts - 1).ok()?))
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a command is. Transitions (DESIGN.md): queued → sent | expired | failed | cancelled;
/// sent → acknowledged | verified | failed | expired, or back to queued (crash recovery only);
/// acknowledged → verified | failed | expired; verified, failed, expired, cancelled are final.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Queued,
    Sent,
    Acknowledged,
    Verified,
    Failed,
    Expired,
    Cancelled,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Queued,
        State::Sent,
        State::Acknowledged,
        State::Verified,
        State::Failed,
        State::Expired,
        State::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Sent => "sent",
            State::Acknowledged => "acknowledged",
            State::Verified => "verified",
            State::Failed => "failed",
            State::Expired => "expired",
            State::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Nothing moves a command out of a final state.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Verified | State::Failed | State::Expired | State::Cancelled
        )
    }

    /// Whether an outcome may move a command from `self` to `next`. Sent → queued is not an
    /// outcome: only lease recovery ([`State::may_recover`]) does it.
    pub fn may_become(self, next: State) -> bool {
        use State::*;
        matches!(
            (self, next),
            (Queued, Sent | Expired | Failed | Cancelled)
                | (Sent, Acknowledged | Verified | Failed | Expired)
                | (Acknowledged, Verified | Failed | Expired)
        )
    }

    /// The states from which an outcome may reach `next`.
    pub fn predecessors(next: State) -> Vec<State> {
        State::ALL
            .into_iter()
            .filter(|s| s.may_become(next))
            .collect()
    }

    /// Only a `sent` command whose sender's lease ran out goes back to the queue.
    pub fn may_recover(self) -> bool {
        self == State::Sent
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_commands_reach_every_meter_and_unmapped_registers_none() {
        use crate::field::vocabulary::MeterModel;
        for op in [
            Op::ReadNow,
            Op::Trip,
            Op::Close,
            Op::Release,
            Op::KeepPowerOn,
        ] {
            assert!(carried_everywhere(op), "{op}");
        }
        for op in [Op::SetTouTable, Op::SetPrepaidParams] {
            assert!(!carried(op, Route::Mqtt), "{op}");
            for model in MeterModel::ALL {
                assert!(!carried(op, Route::Bus(*model)), "{op} {model:?}");
            }
        }
        assert!(carried(Op::SyncClock, Route::Bus(MeterModel::Dlt645)));
        assert!(!carried(Op::SyncClock, Route::Bus(MeterModel::Dtsy1352)));
        assert!(!carried_everywhere(Op::SyncClock));
        assert!(carried(Op::Purchase, Route::Mqtt));
        assert_eq!(
            Route::of(
                MeterModel::Dlt645,
                crate::field::vocabulary::GatewayKind::Mqtt
            ),
            Route::Mqtt
        );
    }

    #[test]
    fn every_op_and_state_has_one_string_form() {
        for op in Op::ALL {
            assert_eq!(Op::parse(op.as_str()), Some(op));
            assert_eq!(
                serde_json::to_value(op).unwrap(),
                serde_json::json!(op.as_str())
            );
        }
        for state in State::ALL {
            assert_eq!(State::parse(state.as_str()), Some(state));
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::json!(state.as_str())
            );
        }
        assert_eq!(Op::parse("Trip"), None);
        assert_eq!(State::parse(""), None);
    }

    #[test]
    fn only_the_designed_transitions_are_allowed() {
        use State::*;
        let allowed = [
            (Queued, Sent),
            (Queued, Expired),
            (Queued, Failed),
            (Queued, Cancelled),
            (Sent, Acknowledged),
            (Sent, Verified),
            (Sent, Failed),
            (Sent, Expired),
            (Acknowledged, Verified),
            (Acknowledged, Failed),
            (Acknowledged, Expired),
        ];
        for from in State::ALL {
            for to in State::ALL {
                assert_eq!(
                    from.may_become(to),
                    allowed.contains(&(from, to)),
                    "{from} → {to}"
                );
            }
            if from.is_final() {
                assert!(State::ALL.iter().all(|to| !from.may_become(*to)));
            }
        }
        // Back to the queue only by recovery.
        assert!(!Sent.may_become(Queued) && Sent.may_recover() && !Acknowledged.may_recover());
        assert_eq!(State::predecessors(Verified), vec![Sent, Acknowledged]);
    }

    #[test]
    fn verification_follows_the_design_table() {
        assert_eq!(Op::ReadNow.state_after_done(None), State::Acknowledged);
        assert_eq!(Op::Trip.state_after_done(Some(false)), State::Verified);
        assert_eq!(Op::Trip.state_after_done(Some(true)), State::Acknowledged);
        assert_eq!(Op::Trip.state_after_done(None), State::Acknowledged);
        assert_eq!(
            Op::KeepPowerOn.state_after_done(Some(true)),
            State::Verified
        );
        assert_eq!(Op::Release.state_after_done(None), State::Verified);
        assert_eq!(Op::Purchase.state_after_done(None), State::Acknowledged);
        assert!(Op::Purchase.moves_money() && !Op::ReadNow.moves_money());
        assert_eq!(
            Op::Trip.supersedes(),
            vec![Op::Close, Op::Release, Op::KeepPowerOn, Op::KeepPowerOff]
        );
        assert!(Op::ReadNow.supersedes().is_empty());
    }

    #[test]
    fn unanswered_commands_back_off_then_fail() {
        let waits: Vec<Option<i64>> = (0..=CONTROL_SENDS_MAX).map(retry_backoff_s).collect();
        assert_eq!(waits, vec![None, Some(5), Some(15), Some(45), None]);
        assert_eq!(retry_backoff_s(i32::MAX), None);
        assert_eq!(retry_backoff_s(-1), None);
    }
}
