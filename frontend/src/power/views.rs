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
    pub sent_at: String,
    /// Why it failed or waits.
    pub error: String,
}

/// A vendor account on the notification settings page (secrets only as "set" or not).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VendorAccountView {
    pub channel: String,
    pub enabled: bool,
    /// (setting, value), in the vendor's order.
    pub config: Vec<(String, String)>,
    /// (message kind, template id), every kind.
    pub templates: Vec<(String, String)>,
    pub secret_set: bool,
    pub callback_token_set: bool,
    /// Empty unless the vendor refused the credentials; then when and why.
    pub broken: String,
}

/// The notification settings page.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NotifySettingsView {
    pub sms_channel: String,
    pub per_phone_hour: i32,
    pub escalate_after_min: i32,
    /// Only for people with the settings right.
    pub accounts: Vec<VendorAccountView>,
    pub can_change: bool,
    /// The caller's own preferences: (kind, wanted), the kinds that may be turned off.
    pub mine: Vec<(String, bool)>,
    /// Where WeChat should push its events for this company.
    pub wechat_callback_path: String,
}

/// A vendor account's form: every vendor's settings (each vendor reads its own), the secrets
/// (empty keeps the stored one) and a template per message kind (`t_<kind>`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NotifyAccountForm {
    #[serde(default)]
    pub enabled: Option<String>,
    #[serde(default)]
    pub access_key_id: String,
    #[serde(default)]
    pub sign_name: String,
    #[serde(default)]
    pub secret_id: String,
    #[serde(default)]
    pub sdk_app_id: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub app_id: String,
    #[serde(default)]
    pub secret: String,
    #[serde(default)]
    pub callback_token: String,
    #[serde(default)]
    pub t_login_code: String,
    #[serde(default)]
    pub t_invitation: String,
    #[serde(default)]
    pub t_alarm1: String,
    #[serde(default)]
    pub t_alarm2: String,
    #[serde(default)]
    pub t_trip_notice: String,
    #[serde(default)]
    pub t_tripped: String,
    #[serde(default)]
    pub t_restored: String,
    #[serde(default)]
    pub t_top_up: String,
    #[serde(default)]
    pub t_alert_meter_stale: String,
    #[serde(default)]
    pub t_alert_gateway_offline: String,
    #[serde(default)]
    pub t_alert_reading_held: String,
    #[serde(default)]
    pub t_alert_relay_mismatch: String,
    #[serde(default)]
    pub t_alert_command_stuck: String,
    #[serde(default)]
    pub t_alert_ledger_check: String,
}

/// Every vendor setting a form may carry, in the order pages show them.
pub const NOTIFY_CONFIG_KEYS: [&str; 6] = [
    "access_key_id",
    "sign_name",
    "secret_id",
    "sdk_app_id",
    "region",
    "app_id",
];

/// The message kinds templates are set for, in the order pages show them.
pub const NOTIFY_KINDS: [&str; 14] = [
    "login_code",
    "invitation",
    "alarm1",
    "alarm2",
    "trip_notice",
    "tripped",
    "restored",
    "top_up",
    "alert_meter_stale",
    "alert_gateway_offline",
    "alert_reading_held",
    "alert_relay_mismatch",
    "alert_command_stuck",
    "alert_ledger_check",
];

impl NotifyAccountForm {
    /// (setting, value) pairs the form carries.
    pub fn config(&self) -> [(&'static str, &str); 6] {
        [
            ("access_key_id", &self.access_key_id),
            ("sign_name", &self.sign_name),
            ("secret_id", &self.secret_id),
            ("sdk_app_id", &self.sdk_app_id),
            ("region", &self.region),
            ("app_id", &self.app_id),
        ]
    }

    /// (kind, template) pairs the form carries.
    pub fn templates(&self) -> [(&'static str, &str); 14] {
        [
            ("login_code", &self.t_login_code),
            ("invitation", &self.t_invitation),
            ("alarm1", &self.t_alarm1),
            ("alarm2", &self.t_alarm2),
            ("trip_notice", &self.t_trip_notice),
            ("tripped", &self.t_tripped),
            ("restored", &self.t_restored),
            ("top_up", &self.t_top_up),
            ("alert_meter_stale", &self.t_alert_meter_stale),
            ("alert_gateway_offline", &self.t_alert_gateway_offline),
            ("alert_reading_held", &self.t_alert_reading_held),
            ("alert_relay_mismatch", &self.t_alert_relay_mismatch),
            ("alert_command_stuck", &self.t_alert_command_stuck),
            ("alert_ledger_check", &self.t_alert_ledger_check),
        ]
    }
}

/// The caller's preferences form: one checkbox per kind that may be turned off (`w_<kind>`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NotifyPrefsForm {
    #[serde(default)]
    pub w_alarm1: Option<String>,
    #[serde(default)]
    pub w_alarm2: Option<String>,
    #[serde(default)]
    pub w_restored: Option<String>,
    #[serde(default)]
    pub w_top_up: Option<String>,
    #[serde(default)]
    pub w_alert_meter_stale: Option<String>,
    #[serde(default)]
    pub w_alert_gateway_offline: Option<String>,
    #[serde(default)]
    pub w_alert_reading_held: Option<String>,
    #[serde(default)]
    pub w_alert_relay_mismatch: Option<String>,
    #[serde(default)]
    pub w_alert_command_stuck: Option<String>,
    #[serde(default)]
    pub w_alert_ledger_check: Option<String>,
}

/// The kinds a person may turn off, in the order pages show them.
pub const NOTIFY_MUTABLE_KINDS: [&str; 10] = [
    "alarm1",
    "alarm2",
    "restored",
    "top_up",
    "alert_meter_stale",
    "alert_gateway_offline",
    "alert_reading_held",
    "alert_relay_mismatch",
    "alert_command_stuck",
    "alert_ledger_check",
];

impl NotifyPrefsForm {
    /// The kinds left unticked: turned off.
    pub fn muted(&self) -> Vec<String> {
        let ticked = [
            self.w_alarm1.is_some(),
            self.w_alarm2.is_some(),
            self.w_restored.is_some(),
            self.w_top_up.is_some(),
            self.w_alert_meter_stale.is_some(),
            self.w_alert_gateway_offline.is_some(),
            self.w_alert_reading_held.is_some(),
            self.w_alert_relay_mismatch.is_some(),
            self.w_alert_command_stuck.is_some(),
            self.w_alert_ledger_check.is_some(),
        ];
        NOTIFY_MUTABLE_KINDS
            .iter()
            .zip(ticked)
            .filter(|(_, on)| !on)
            .map(|(k, _)| k.to_string())
            .collect()
    }
}

/// One meter-side meter on the meter-side page: counters (platform vs meter), money, drift.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MeterSideRowView {
    pub meter_id: String,
    pub meter_number: String,
    pub shop: String,
    pub key_version: String,
    pub platform_purchases: String,
    pub meter_purchases: String,
    pub out_of_band: bool,
    pub in_transit: String,
    pub shadow: String,
    pub remaining: String,
    pub drift: String,
    pub price: String,
    pub read_back_at: String,
    pub in_flight: i64,
}

/// One meter-side meter's page: its state, control counters, secure command history and what the
/// viewer may do there.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MeterSideDetailView {
    pub row: MeterSideRowView,
    pub platform_controls: String,
    pub meter_controls: String,
    pub history: Vec<SecureCommandView>,
    /// A company admin: may export the meter's key (audited).
    pub can_export_key: bool,
    /// May take credit back off the meter (right `refund`).
    pub can_deduct: bool,
    /// The version a waiting re-key takes the meter to, and the company's newest version.
    pub rekey_to: Option<i32>,
    pub newest_key_version: Option<i32>,
}

/// One secure command of a meter's history (money formatted from integer fen).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SecureCommandView {
    pub id: String,
    pub op: String,
    pub state: String,
    pub sequence: String,
    /// Yuan for purchase and deduct, yuan per kWh for set price, empty otherwise.
    pub amount: String,
    pub ack_status: String,
    pub attempts: i32,
    pub detail: String,
    pub created_at: String,
    pub updated_at: String,
    /// A failed purchase whose money waits in transit: a cancel may be asked for.
    pub cancellable: bool,
}

/// A meter key as exported once on its page.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExportedKeyView {
    pub key_version: i32,
    pub meter_key_hex: String,
}
