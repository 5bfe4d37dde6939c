//! The server side of the held readings page (release or correct a held reading) and of the
//! approvals inbox, which lists reversals, corrections and write-offs alike and sends each
//! decision to the service of its kind.

use super::{card, key_of};
use crate::billing::views::{ApprovalView, ApprovalsView, HeldPageView, HeldView};
use crate::web::server::{
    field_error, finish, finish_keeping, read_err, read_session, session_for_change, UiError,
};
use crate::web::WebError;
use powertab_core::billing::approvals::{self, ApprovalKind};
use powertab_core::billing::{accounts, reversals, review};
use powertab_core::kernel::money::EnergyWh;
use powertab_core::tenancy::roles::{Need, Right};
use uuid::Uuid;

fn local_time_of(
    principal: &powertab_core::auth::Principal,
    t: chrono::DateTime<chrono::Utc>,
) -> String {
    crate::web::server::local_time(t, &principal.tz())
}

/// The locale word for why rating stopped (a rating error's text is not a word).
fn reason_word(reason: Option<&str>) -> &'static str {
    match reason {
        Some("reset") => "reset",
        Some("gap") => "gap",
        Some("jump") => "jump",
        Some("ratio_mismatch") => "ratio_mismatch",
        Some("no_tariff") => "no_tariff",
        _ => "other",
    }
}

pub async fn get_held() -> Result<HeldPageView, WebError> {
    let (principal, mut tx) = read_session().await?;
    let held = review::held(&mut tx, &principal).await.map_err(read_err)?;
    let above: i64 = sqlx::query_scalar("select correction_approval_above_wh from settings")
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| read_err(e.into()))?;
    let kwh = |e: Option<EnergyWh>| e.map(|e| e.to_string()).unwrap_or_default();
    Ok(HeldPageView {
        items: held
            .iter()
            .map(|h| HeldView {
                meter_id: h.meter_id.to_string(),
                meter: h.meter_number.clone(),
                shop: format!(
                    "{} {}",
                    h.shop_number.clone().unwrap_or_default(),
                    h.shop_name.clone().unwrap_or_default()
                )
                .trim()
                .to_owned(),
                account_id: h.account_id.to_string(),
                reason: reason_word(h.flag.as_deref().or(h.held_reason.as_deref())).to_owned(),
                held_at: local_time_of(&principal, h.held_at),
                previous_at: local_time_of(&principal, h.previous_read_at),
                previous_kwh: h.previous_energy_wh.to_string(),
                held_reading_at: h
                    .read_at
                    .map(|t| local_time_of(&principal, t))
                    .unwrap_or_default(),
                held_kwh: kwh(h.energy_wh),
                as_read_kwh: kwh(h.energy_as_read_wh),
                waiting: h.waiting_request.is_some(),
            })
            .collect(),
        form_key: Uuid::now_v7().to_string(),
        can_review: principal.can(Need::Act(Right::ReadingsReview)),
        approval_above_kwh: EnergyWh::from_wh(above).to_string(),
    })
}

/// Releases a held reading as read (empty `kwh`) or with the energy typed (a correction).
pub async fn held_release(
    csrf: String,
    key: String,
    meter_id: String,
    kwh: String,
    reason: String,
) -> Result<(), WebError> {
    let kept = serde_json::json!({ "meter_id": &meter_id, "kwh": &kwh, "reason": &reason });
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let key = key_of(&key)?;
        let meter: Uuid = meter_id.parse().map_err(|_| field_error("meter_id"))?;
        let correction = match kwh.trim() {
            "" => None,
            text => Some(EnergyWh::parse_kwh(text).map_err(|_| field_error("kwh"))?),
        };
        let outcome = review::release(&mut tx, &principal, meter, correction, &reason, &key)
            .await
            .map_err(|e| UiError::from(e).renamed(&[("energy_wh", "kwh")]))?;
        tx.commit().await?;
        Ok(if outcome.request.is_some() {
            "/held-readings?ok=held.asked".to_owned()
        } else {
            "/held-readings?ok=held.released".to_owned()
        })
    }
    .await;
    finish_keeping(result, "release-form", &kept)
}

pub async fn get_approvals() -> Result<ApprovalsView, WebError> {
    let (principal, mut tx) = read_session().await?;
    let mut items = vec![];
    for r in reversals::waiting(&mut tx, &principal)
        .await
        .map_err(read_err)?
    {
        let txn = powertab_core::billing::ledger::post::load(&mut tx, r.txn_id)
            .await
            .map_err(read_err)?;
        let Some(account_id) = txn.and_then(|t| t.shop_account_id) else {
            continue;
        };
        let account = accounts::get(&mut tx, &principal, account_id)
            .await
            .map_err(read_err)?;
        items.push(ApprovalView {
            id: r.id.to_string(),
            kind: "reversal".into(),
            link: format!("/accounts/{account_id}"),
            subject: card(&account).shop,
            amount_fen: Some(r.amount_fen.fen()),
            energy_kwh: None,
            reason: r.reason,
            requested_at: local_time_of(&principal, r.requested_at),
            own: r.requested_by == principal.user_id,
        });
    }
    for r in approvals::waiting(&mut tx, &principal)
        .await
        .map_err(read_err)?
    {
        let (link, subject) = match r.kind {
            ApprovalKind::ReadingCorrection => {
                let meter: Option<String> =
                    sqlx::query_scalar("select meter_number from meters where id = $1")
                        .bind(r.target_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(|e| read_err(e.into()))?;
                ("/held-readings".to_owned(), meter.unwrap_or_default())
            }
            ApprovalKind::WriteOff => {
                let account = accounts::get(&mut tx, &principal, r.target_id)
                    .await
                    .map_err(read_err)?;
                (format!("/accounts/{}", r.target_id), card(&account).shop)
            }
            ApprovalKind::PurchaseCancel => {
                let meter: Option<String> = sqlx::query_scalar(
                    "select m.meter_number from commands c join meters m on m.id = c.meter_id where c.id = $1",
                )
                .bind(r.target_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| read_err(e.into()))?;
                ("/approvals".to_owned(), meter.unwrap_or_default())
            }
        };
        items.push(ApprovalView {
            id: r.id.to_string(),
            kind: r.kind.to_string(),
            link,
            subject,
            amount_fen: r.amount_fen.map(|a| a.fen()),
            energy_kwh: r.energy_wh.map(|e| e.to_string()),
            reason: r.reason,
            requested_at: local_time_of(&principal, r.requested_at),
            own: r.requested_by == principal.user_id,
        });
    }
    items.sort_by(|a, b| a.requested_at.cmp(&b.requested_at));
    Ok(ApprovalsView {
        items,
        form_key: Uuid::now_v7().to_string(),
        can_approve: principal.can(Need::Act(Right::Approve)),
    })
}

pub async fn decide_approval(
    csrf: String,
    key: String,
    id: String,
    kind: String,
    decision: String,
) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let id: Uuid = id.parse().map_err(|_| field_error("id"))?;
        let approve = match decision.as_str() {
            "approve" => true,
            "reject" => false,
            _ => return Err(field_error("decision")),
        };
        match (kind.as_str(), approve) {
            ("reversal", true) => {
                reversals::approve(&mut tx, &principal, id, &key_of(&key)?).await?;
            }
            ("reversal", false) => {
                reversals::reject(&mut tx, &principal, id).await?;
            }
            ("reading_correction", true) => {
                review::approve_correction(&mut tx, &principal, id, &key_of(&key)?).await?;
            }
            ("write_off", true) => {
                powertab_core::billing::closing::approve_write_off(
                    &mut tx,
                    &principal,
                    id,
                    &key_of(&key)?,
                )
                .await?;
            }
            ("reading_correction" | "write_off", false) => {
                approvals::reject(&mut tx, &principal, id).await?;
            }
            _ => return Err(field_error("kind")),
        }
        tx.commit().await?;
        Ok(format!(
            "/approvals?ok={}",
            if approve {
                "approvals.approved"
            } else {
                "approvals.rejected"
            }
        ))
    }
    .await;
    finish(result)
}
