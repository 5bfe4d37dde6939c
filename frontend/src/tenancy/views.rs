//! View types of the staff and company pages: the session, companies, users, audit rows and the
//! company settings (defaults every meter inherits, the holiday calendar).

use crate::web::KeptForm;
use serde::{Deserialize, Serialize};

/// Who is logged in, as pages need it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SessionView {
    pub username: String,
    pub display_name: String,
    pub role: String,
    pub company_slug: Option<String>,
    pub company_name: Option<String>,
    pub is_platform: bool,
    pub must_change_password: bool,
    /// Repeated in every form as the hidden `csrf` field.
    pub csrf: String,
    pub can_administer: bool,
    pub can_export: bool,
    pub can_write_platform: bool,
    /// May change the property setup (admins, operators with the `settings` right).
    pub can_settings: bool,
    /// May switch meters remotely (the `trip_close` or `keep_power` right).
    #[serde(default)]
    pub can_control: bool,
    /// Company staff: open field alarms (stale meters, offline gateways), shown in the header.
    pub field_alarms_open: i64,
    /// The form this browser's last change was refused on, handed to that form
    /// (`crate::components::use_kept`).
    pub kept: KeptForm,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CompanyRow {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub status: String,
    pub time_zone: String,
    pub max_meters: i32,
    pub max_gateways: i32,
    pub max_operators: i32,
    pub created: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub phone: String,
    pub role: String,
    pub status: String,
    pub must_change_password: bool,
    pub rights: Vec<String>,
    pub building_ids: Vec<String>,
    pub created: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AuditRow {
    pub id: String,
    pub at: String,
    pub actor: String,
    pub role: String,
    pub source_ip: String,
    pub action: String,
    pub target: String,
    pub change: String,
}

/// The rights an operator can be granted, in display order (names of `powertab_core::tenancy::roles::Right`).
pub const RIGHTS: [&str; 13] = [
    "top_up",
    "refund",
    "reversal",
    "approve",
    "trip_close",
    "keep_power",
    "settings",
    "export",
    "accounts",
    "payout",
    "readings_review",
    "daily_close",
    "emergency_credit",
];

/// Rights arrive as one optional checkbox field each.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RightBoxes {
    #[serde(default)]
    pub right_top_up: Option<String>,
    #[serde(default)]
    pub right_refund: Option<String>,
    #[serde(default)]
    pub right_reversal: Option<String>,
    #[serde(default)]
    pub right_approve: Option<String>,
    #[serde(default)]
    pub right_trip_close: Option<String>,
    #[serde(default)]
    pub right_keep_power: Option<String>,
    #[serde(default)]
    pub right_settings: Option<String>,
    #[serde(default)]
    pub right_export: Option<String>,
    #[serde(default)]
    pub right_accounts: Option<String>,
    #[serde(default)]
    pub right_payout: Option<String>,
    #[serde(default)]
    pub right_readings_review: Option<String>,
    #[serde(default)]
    pub right_daily_close: Option<String>,
    #[serde(default)]
    pub right_emergency_credit: Option<String>,
}

impl RightBoxes {
    /// The names of the ticked rights.
    pub fn ticked(&self) -> Vec<&'static str> {
        let boxes = [
            &self.right_top_up,
            &self.right_refund,
            &self.right_reversal,
            &self.right_approve,
            &self.right_trip_close,
            &self.right_keep_power,
            &self.right_settings,
            &self.right_export,
            &self.right_accounts,
            &self.right_payout,
            &self.right_readings_review,
            &self.right_daily_close,
            &self.right_emergency_credit,
        ];
        RIGHTS
            .iter()
            .zip(boxes)
            .filter(|(_, b)| b.is_some())
            .map(|(r, _)| *r)
            .collect()
    }
}

/// Company defaults as the form shows them: money in yuan, quiet hours as `HH:MM`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SettingsView {
    pub alarm1: String,
    pub alarm2: String,
    pub overdraft_limit: String,
    pub restore_level: String,
    pub quiet_start: String,
    pub quiet_end: String,
    pub no_trip_on_holidays: bool,
    pub arrears_cap: String,
    /// Alarm limits, minutes.
    pub stale_meter_min: String,
    pub offline_gateway_min: String,
    /// Minutes between the trip notice and the trip.
    pub trip_notice_min: String,
    /// Money rules: reversal window (days), approval thresholds (yuan, kWh).
    pub reversal_window_days: String,
    pub reversal_approval_above: String,
    pub correction_approval_above_kwh: String,
    /// Shop tenants' own emergency credit (yuan, hours) and top-up presets (`50, 100, 200`).
    pub tenant_emergency: String,
    pub tenant_emergency_hours: String,
    pub top_up_presets: String,
    pub time_zone: String,
    pub year: i32,
    /// (date, `holiday` | `workday`, name) of `year`.
    pub days: Vec<(String, String, String)>,
}

/// The defaults form (checkboxes are present only when ticked).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SettingsForm {
    pub alarm1: String,
    pub alarm2: String,
    pub overdraft_limit: String,
    pub restore_level: String,
    #[serde(default)]
    pub quiet_start: String,
    #[serde(default)]
    pub quiet_end: String,
    #[serde(default)]
    pub no_trip_on_holidays: Option<String>,
    pub arrears_cap: String,
    #[serde(default)]
    pub stale_meter_min: String,
    #[serde(default)]
    pub offline_gateway_min: String,
    #[serde(default)]
    pub trip_notice_min: String,
    #[serde(default)]
    pub reversal_window_days: String,
    #[serde(default)]
    pub reversal_approval_above: String,
    #[serde(default)]
    pub correction_approval_above_kwh: String,
    #[serde(default)]
    pub tenant_emergency: String,
    #[serde(default)]
    pub tenant_emergency_hours: String,
    #[serde(default)]
    pub top_up_presets: String,
}
