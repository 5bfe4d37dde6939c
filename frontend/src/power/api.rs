//! Server functions of the remote-control pages.

use super::views::*;
use crate::web::WebError;
use leptos::prelude::*;

/// Commands of the company: `view` open (default), failed, stuck or all.
#[server(prefix = "/sfn", endpoint = "commands")]
pub async fn get_commands(view: String) -> Result<CommandsView, WebError> {
    super::server::get_commands(view).await
}

/// Sends a failed, expired or cancelled command again.
#[server(prefix = "/sfn", endpoint = "command_retry")]
pub async fn retry_command(csrf: String, id: String) -> Result<(), WebError> {
    super::server::retry_command(csrf, id).await
}

/// Cancels a command that has not reached its meter.
#[server(prefix = "/sfn", endpoint = "command_cancel")]
pub async fn cancel_command(csrf: String, id: String) -> Result<(), WebError> {
    super::server::cancel_command(csrf, id).await
}

#[server(prefix = "/sfn", endpoint = "batch_form")]
pub async fn get_batch_form() -> Result<BatchFormView, WebError> {
    super::server::get_batch_form().await
}

/// How many meters and which shops the selection holds now.
#[server(prefix = "/sfn", endpoint = "batch_preview")]
pub async fn preview_batch(
    op: String,
    building: String,
    floor: String,
    gateway: String,
    q: String,
) -> Result<PreviewView, WebError> {
    super::server::preview_batch(op, building, floor, gateway, q).await
}

/// Starts the batch the person confirmed (`confirm_meters`: the count they were shown).
#[server(prefix = "/sfn", endpoint = "batch_start")]
pub async fn start_batch(csrf: String, #[server(flatten)] form: BatchForm) -> Result<(), WebError> {
    super::server::start_batch(csrf, form).await
}

#[server(prefix = "/sfn", endpoint = "batch")]
pub async fn get_batch(id: String) -> Result<(BatchView, Vec<CommandRowView>), WebError> {
    super::server::get_batch(id).await
}

/// Keep-power, override and the last commands of a meter.
#[server(prefix = "/sfn", endpoint = "meter_power")]
pub async fn get_meter_power(id: String) -> Result<MeterPowerView, WebError> {
    super::server::get_meter_power(id).await
}

/// An account's levels and emergency credit.
#[server(prefix = "/sfn", endpoint = "account_power")]
pub async fn get_account_power(id: String) -> Result<AccountPowerView, WebError> {
    super::server::get_account_power(id).await
}

/// Sets an account's own levels (yuan; an empty field follows the company default).
#[server(prefix = "/sfn", endpoint = "account_levels")]
pub async fn save_account_levels(
    csrf: String,
    id: String,
    #[server(default)] alarm1: String,
    #[server(default)] alarm2: String,
    #[server(default)] overdraft_limit: String,
    #[server(default)] restore_level: String,
) -> Result<(), WebError> {
    super::server::save_account_levels(csrf, id, [alarm1, alarm2, overdraft_limit, restore_level])
        .await
}

/// Grants emergency credit (yuan, hours).
#[server(prefix = "/sfn", endpoint = "account_emergency")]
pub async fn grant_emergency(
    csrf: String,
    id: String,
    amount: String,
    hours: String,
) -> Result<(), WebError> {
    super::server::grant_emergency(csrf, id, amount, hours).await
}

/// Meter-side meters: their secure counters, shadow balance, read-back remaining and drift;
/// `can_export` with them.
#[server(prefix = "/sfn", endpoint = "meter_side")]
pub async fn get_meter_side() -> Result<(Vec<MeterSideRowView>, bool), WebError> {
    super::server::get_meter_side().await
}

/// Field alarms: open ones, or (`all` = `1`) the history too.
#[server(prefix = "/sfn", endpoint = "alarms")]
pub async fn get_alarms(all: String) -> Result<AlarmsView, WebError> {
    super::server::get_alarms(all).await
}

/// Acknowledges an open field alarm.
#[server(prefix = "/sfn", endpoint = "alarm_acknowledge")]
pub async fn acknowledge_alarm(csrf: String, id: String) -> Result<(), WebError> {
    super::server::acknowledge_alarm(csrf, id).await
}

/// The notification log, newest first; `can_export` with it.
#[server(prefix = "/sfn", endpoint = "notifications")]
pub async fn get_messages() -> Result<(Vec<MessageRowView>, bool), WebError> {
    super::server::get_messages().await
}

/// The notification settings page: delivery, vendor accounts, the caller's preferences.
#[server(prefix = "/sfn", endpoint = "notify_settings")]
pub async fn get_notify_settings() -> Result<NotifySettingsView, WebError> {
    super::server::get_notify_settings().await
}

/// How messages go: the SMS vendor, the per-phone limit, escalation.
#[server(prefix = "/sfn", endpoint = "notify_delivery")]
pub async fn save_notify_delivery(
    csrf: String,
    sms_channel: String,
    per_phone_hour: String,
    escalate_after_min: String,
) -> Result<(), WebError> {
    super::server::save_notify_delivery(csrf, sms_channel, per_phone_hour, escalate_after_min).await
}

/// One vendor account (secrets: empty keeps the stored one).
#[server(prefix = "/sfn", endpoint = "notify_account")]
pub async fn save_notify_account(
    csrf: String,
    channel: String,
    #[server(flatten)] form: NotifyAccountForm,
) -> Result<(), WebError> {
    super::server::save_notify_account(csrf, channel, form).await
}

/// The caller's own preferences: the kinds checked are wanted.
#[server(prefix = "/sfn", endpoint = "notify_preferences")]
pub async fn save_notify_preferences(
    csrf: String,
    #[server(flatten)] form: NotifyPrefsForm,
) -> Result<(), WebError> {
    super::server::save_notify_preferences(csrf, form).await
}

/// One meter-side meter: its state, counters and secure command history.
#[server(prefix = "/sfn", endpoint = "meter_side_meter")]
pub async fn get_meter_side_meter(id: String) -> Result<MeterSideDetailView, WebError> {
    super::server::get_meter_side_meter(id).await
}

/// A meter's key KM for loading it into a meter or gateway (company admins; audited).
#[server(prefix = "/sfn", endpoint = "meter_side_key")]
pub async fn export_meter_key(id: String) -> Result<ExportedKeyView, WebError> {
    super::server::export_meter_key(id).await
}

/// Asks for the cancel of a failed purchase whose money waits in transit.
#[server(prefix = "/sfn", endpoint = "meter_side_cancel")]
pub async fn request_purchase_cancel(
    csrf: String,
    meter: String,
    command: String,
    reason: String,
    key: String,
) -> Result<(), WebError> {
    super::server::request_purchase_cancel(csrf, meter, command, reason, key).await
}

/// Takes credit back off a meter-side meter (a verified deduct puts it in the wallet).
#[server(prefix = "/sfn", endpoint = "meter_side_deduct")]
pub async fn take_back_credit(
    csrf: String,
    meter: String,
    amount: String,
    reason: String,
) -> Result<(), WebError> {
    super::server::take_back_credit(csrf, meter, amount, reason).await
}

/// Starts, verifies or abandons a meter's re-key onto the newest master key version.
#[server(prefix = "/sfn", endpoint = "meter_side_rekey")]
pub async fn rekey_meter(csrf: String, meter: String, action: String) -> Result<(), WebError> {
    super::server::rekey_meter(csrf, meter, action).await
}
