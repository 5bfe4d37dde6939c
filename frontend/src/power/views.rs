//! View types of the remote-control pages.

use serde::{Deserialize, Serialize};

/// One command as the lists show it (times already in the property's zone).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CommandRowView {
    pub id: String,
    pub meter_id: String,
    pub meter_number: String,
    pub shop: String,
    pub op: String,
    pub state: String,
    /// `rule:<name>`, or the operator's display name.
    pub source: String,
    pub detail: String,
    pub attempts: i32,
    pub created_at: String,
    pub updated_at: String,
    pub stuck: bool,
    /// Failed, expired or cancelled, and the viewer may send it again.
    pub can_retry: bool,
    /// Queued or waiting for a retry, and the viewer may cancel it.
    pub can_cancel: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CommandsView {
    pub rows: Vec<CommandRowView>,
    pub can_export: bool,
}

/// The batch form's choices.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BatchFormView {
    /// (id, name)
    pub buildings: Vec<(String, String)>,
    /// (id, "building · floor")
    pub floors: Vec<(String, String)>,
    /// (id, identity)
    pub gateways: Vec<(String, String)>,
}

/// What a selection holds now.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PreviewView {
    pub op: String,
    pub meters: usize,
    pub skipped_keep_power: usize,
    pub shops_total: usize,
    pub shops: Vec<String>,
}

/// A batch and its progress.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BatchView {
    pub id: String,
    pub op: String,
    pub meters: i32,
    pub skipped: i32,
    pub created_at: String,
    /// (state, count), in the order queued … cancelled.
    pub states: Vec<(String, i64)>,
    pub finished: bool,
}

/// A meter's power state as its page shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MeterPowerView {
    pub keep_power: bool,
    /// `open`, `closed` or empty (no operator override).
    pub relay_override: String,
    /// The account's rules tripped it.
    pub tripped: bool,
    pub commands: Vec<CommandRowView>,
}

/// An account's levels and emergency credit as its page shows them (yuan text).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AccountPowerView {
    pub id: String,
    /// In force: (alarm 1, alarm 2, overdraft limit, restore level).
    pub alarm1: String,
    pub alarm2: String,
    pub overdraft_limit: String,
    pub restore_level: String,
    /// The account's own, empty where it follows the company default.
    pub own_alarm1: String,
    pub own_alarm2: String,
    pub own_overdraft_limit: String,
    pub own_restore_level: String,
    /// The latest emergency credit: amount (yuan), until (local time), still in force.
    pub credit: Option<(String, String, bool)>,
    pub can_levels: bool,
    pub can_emergency: bool,
    pub open: bool,
}

/// The batch start form: the selection again, the count the person was shown, the tick.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BatchForm {
    pub op: String,
    #[serde(default)]
    pub building: String,
    #[serde(default)]
    pub floor: String,
    #[serde(default)]
    pub gateway: String,
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub confirm_meters: String,
    #[serde(default)]
    pub confirm: String,
}

/// A field alarm as the alarm list shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AlarmRowView {
    pub id: String,
    pub kind: String,
    pub target: String,
    pub detail: String,
    pub raised_at: String,
    /// Empty while open.
    pub cleared_at: String,
    /// Empty until acknowledged.
    pub acknowledged_at: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AlarmsView {
    pub rows: Vec<AlarmRowView>,
    pub can_acknowledge: bool,
    pub can_export: bool,
}

/// A message of the notification log (times in the property's zone).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MessageRowView {
    pub shop: String,
    pub kind: String,
    pub recipient: String,
    pub channel: String,
    pub body: String,
    pub created_at: String,
    pub deliver_after: String,
    pub state: String,
}
