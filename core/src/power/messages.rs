//! The notification log (issue: "every message and its delivery status in a log with `.xlsx`
//! export"): the messages the rules wrote for tenants — alarms, trip notices, "power cut",
//! "power back" — with recipient, channel, when they were written, when they may go (the night
//! window defers them to 08:00) and their state. Company staff see the messages of the accounts
//! in their buildings.

use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, QueryBuilder, Row};
use uuid::Uuid;

/// Rows the log gives at most.
pub const LOG_MAX: i64 = 5_000;

/// What to list, newest first.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct MessageFilter {
    pub account_id: Option<Uuid>,
    /// `alarm1`, `alarm2`, `trip_notice`, `tripped`, `restored`.
    pub kind: Option<String>,
    /// At most this many (≤ 5,000; default 500).
    pub limit: Option<i64>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoggedMessage {
    pub id: Uuid,
    pub account_id: Option<Uuid>,
    /// The shop, `number name`.
    pub shop: String,
    pub kind: String,
    /// A phone number or a tenant user's login.
    pub recipient: String,
    pub channel: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub deliver_after: DateTime<Utc>,
    /// `queued`, `sent`, `delivered`, `failed` or `superseded`.
    pub state: String,
    /// When the vendor took it.
    pub sent_at: Option<DateTime<Utc>>,
    /// Why it failed, or why it waits (a vendor's refusal, the per-phone limit).
    pub error: String,
}

/// The messages `filter` asks for.
#[tracing::instrument(skip_all)]
pub async fn list(
    conn: &mut PgConnection,
    principal: &Principal,
    filter: &MessageFilter,
) -> CoreResult<Vec<LoggedMessage>> {
    principal.require_read_company()?;
    let limit = filter.limit.unwrap_or(500);
    if !(1..=LOG_MAX).contains(&limit) {
        return Err(CoreError::field("limit", "between 1 and 5000"));
    }
    let mut q = QueryBuilder::new(
        "select n.id, n.account_id, coalesce(s.number || ' ' || s.name, '') as shop, n.kind,
                n.recipient, n.channel, n.body, n.created_at, n.deliver_after, n.state,
                n.sent_at, n.error
         from notifications n left join shop_accounts a on a.id = n.account_id
         left join shops s on s.id = a.shop_id where true",
    );
    if let Some(account) = filter.account_id {
        q.push(" and n.account_id = ").push_bind(account);
    }
    if let Some(kind) = filter.kind.as_deref().filter(|k| !k.is_empty()) {
        q.push(" and n.kind = ").push_bind(kind.to_owned());
    }
    if let Some(ids) = principal.building_limit_param() {
        q.push(" and s.building_id = any(").push_bind(ids).push(")");
    }
    q.push(" order by n.created_at desc, n.id desc limit ")
        .push_bind(limit);
    q.build()
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| {
            Ok(LoggedMessage {
                id: r.try_get("id")?,
                account_id: r.try_get("account_id")?,
                shop: r.try_get::<String, _>("shop")?.trim().to_owned(),
                kind: r.try_get("kind")?,
                recipient: r.try_get("recipient")?,
                channel: r.try_get("channel")?,
                body: r.try_get("body")?,
                created_at: r.try_get("created_at")?,
                deliver_after: r.try_get("deliver_after")?,
                state: r.try_get("state")?,
                sent_at: r.try_get("sent_at")?,
                error: r.try_get("error")?,
            })
        })
        .collect()
}

/// The `.xlsx` twin of the log, headers in `lang`.
pub fn sheet(messages: &[LoggedMessage], lang: &str) -> crate::kernel::xlsx::Sheet {
    use crate::kernel::xlsx::{Cell, Column, Sheet};
    let zh = lang != "en";
    let header = |zh_text: &str, en_text: &str| if zh { zh_text } else { en_text }.to_owned();
    Sheet {
        name: header("消息", "Messages"),
        columns: vec![
            Column::new(header("生成时间", "Written at"), 20.0),
            Column::new(header("发送时间不早于", "Not before"), 20.0),
            Column::new(header("商铺", "Shop"), 20.0),
            Column::new(header("类型", "Kind"), 12.0),
            Column::new(header("接收人", "Recipient"), 16.0),
            Column::new(header("渠道", "Channel"), 10.0),
            Column::new(header("状态", "State"), 10.0),
            Column::new(header("发送时间", "Sent at"), 20.0),
            Column::new(header("说明", "Note"), 30.0),
            Column::new(header("内容", "Text"), 60.0),
        ],
        rows: messages
            .iter()
            .map(|m| {
                vec![
                    Cell::Time(m.created_at),
                    Cell::Time(m.deliver_after),
                    Cell::Text(m.shop.clone()),
                    Cell::Text(m.kind.clone()),
                    Cell::Text(m.recipient.clone()),
                    Cell::Text(m.channel.clone()),
                    Cell::Text(m.state.clone()),
                    m.sent_at.map(Cell::Time).unwrap_or(Cell::Empty),
                    Cell::Text(m.error.clone()),
                    Cell::Text(m.body.clone()),
                ]
            })
            .collect(),
        totals: None,
    }
}
