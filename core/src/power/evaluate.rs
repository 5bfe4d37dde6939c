//! The rules' database side: [`evaluate`] runs [`super::decide`] for one account under a lock on
//! its `account_power` row, in the caller's transaction, and turns the actions into typed
//! commands (source [`RULE_SOURCE`]) for every meter of the account and messages to its tenants
//! (the sandbox channel: `notifications`). [`sweep`] evaluates every account whose rules may
//! have something to do now (a notice running, tripped, or a wallet near a level), so a trip
//! notice that ran out while nothing was posted, or a quiet window that ended, is never missed —
//! also after a restart; then it compares every relay with the intended state (`relay.rs`).

use super::{decide, Action, PowerState, Situation};
use crate::auth::Principal;
use crate::billing::accounts::{available, unposted_charges};
use crate::billing::ledger::post::balance;
use crate::billing::ledger::AccountKey;
use crate::commands::{self, NewCommand, Op};
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::AmountFen;
use crate::tenancy::settings::{self, CompanySettings};
use chrono::{DateTime, Duration, NaiveTime, Timelike, Utc};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

/// Who asked, on the commands the rules enqueue.
pub const RULE_SOURCE: &str = "rule:balance";
/// A trip nobody could carry out within this long expires (the sweep asks again while the
/// condition holds).
const TRIP_VALID_S: i64 = 600;
/// A restore waits longer: a shop that paid must get its power back.
const CLOSE_VALID_S: i64 = 3_600;
/// The night window for messages other than trip notices (DESIGN.md): 22:00–08:00 local.
const NIGHT_FROM_HOUR: u32 = 22;
const NIGHT_UNTIL_HOUR: u32 = 8;

/// Runs the rules for `account` now (principal: the company's system worker or the person whose
/// request moved the balance). Returns what was done; nothing for an account that is not open.
#[tracing::instrument(skip_all, fields(%account))]
pub async fn evaluate(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
) -> CoreResult<Vec<Action>> {
    let row: Option<(String, String)> =
        sqlx::query_as("select state, prepayment_mode from shop_accounts where id = $1")
            .bind(account)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((state, mode)) = row else {
        return Err(CoreError::NotFound("account"));
    };
    // Closing and closed accounts settle their money; the rules stop at the close. Meter-side
    // accounts' meters keep their own levels and trip themselves (DESIGN.md): their wallet
    // only waits to become the next purchase, so the platform's balance rules never act on it.
    if state != "open" || mode == "meter" {
        return Ok(Vec::new());
    }
    sqlx::query("insert into account_power (account_id) values ($1) on conflict do nothing")
        .bind(account)
        .execute(&mut *conn)
        .await?;
    let row = sqlx::query(
        "select alarm1_fired, alarm2_fired, noticed_at, tripped_at from account_power
         where account_id = $1 for update",
    )
    .bind(account)
    .fetch_one(&mut *conn)
    .await?;
    let before = PowerState {
        alarm1_fired: row.try_get("alarm1_fired")?,
        alarm2_fired: row.try_get("alarm2_fired")?,
        noticed_at: row.try_get("noticed_at")?,
        tripped: row
            .try_get::<Option<DateTime<Utc>>, _>("tripped_at")?
            .is_some(),
    };
    let company = settings::load(conn).await?;
    let notice_s = company.trip_notice_s;
    let wallet = balance(conn, AccountKey::Wallet(account)).await?;
    let available = available(wallet, unposted_charges(conn, account).await?)?;
    let now = principal.now();
    let credit = super::emergency::in_force(conn, account, available, now).await?;
    let own = super::levels::own(conn, account).await?;
    let mut levels = super::levels::in_force(&own, &company).for_rules(credit)?;
    if !levels.are_ordered() {
        // The company's defaults changed under the account's own levels: the rules keep
        // working on the defaults (valid by the settings' checks) until someone fixes them.
        tracing::warn!(%account, ?levels, "the account's levels are out of order; using the company's");
        levels = super::levels::in_force(&Default::default(), &company).for_rules(credit)?;
    }
    let calendar = settings::calendar(conn).await?;
    let situation = Situation {
        available,
        now,
        notice: Duration::seconds(i64::from(notice_s)),
        quiet: is_quiet(&company, &calendar, now, principal.tz()),
        arrears_cap: company.arrears_cap_fen,
    };
    let (after, actions) = decide(&levels, before, &situation);
    sqlx::query(
        "update account_power set alarm1_fired = $2, alarm2_fired = $3, noticed_at = $4,
             tripped_at = case when $5 then coalesce(tripped_at, $6) end, updated_at = $6
         where account_id = $1",
    )
    .bind(account)
    .bind(after.alarm1_fired)
    .bind(after.alarm2_fired)
    .bind(after.noticed_at)
    .bind(after.tripped)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    for action in &actions {
        match action {
            Action::Trip => control(conn, principal, account, Op::Trip, available).await?,
            Action::Restore => control(conn, principal, account, Op::Close, available).await?,
            _ => {}
        }
        match action {
            // Told once the relays are seen so (`confirm.rs`).
            Action::Trip | Action::Restore => {
                super::confirm::expect(conn, account, *action, now).await?
            }
            // Rare (a crossing): the message reads the account afresh.
            _ => tell(conn, principal, account, *action).await?,
        }
    }
    if !actions.is_empty() {
        tracing::info!(%account, ?actions, available_fen = available.fen(), "power rules acted");
    }
    Ok(actions)
}

/// Inside the company's quiet hours, or on a holiday when holidays are quiet.
fn is_quiet(
    s: &CompanySettings,
    calendar: &crate::tariff::Calendar,
    now: DateTime<Utc>,
    tz: chrono_tz::Tz,
) -> bool {
    let local = now.with_timezone(&tz);
    if s.no_trip_on_holidays && calendar.is_holiday(local.date_naive()) {
        return true;
    }
    let minute = i32::try_from(local.hour() * 60 + local.minute()).unwrap_or(0);
    match (s.quiet_start_minute, s.quiet_end_minute) {
        (Some(start), Some(end)) if start <= end => (start..end).contains(&minute),
        // A window across midnight (22:00–06:00).
        (Some(start), Some(end)) => minute >= start || minute < end,
        _ => false,
    }
}

/// Enqueues `op` for every meter of `account`: a trip skips meters under keep-power and ends an
/// operator's close; a close skips a meter an operator tripped (that trip sticks until an
/// operator releases it).
async fn control(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
    op: Op,
    available: AmountFen,
) -> CoreResult<()> {
    let meters: Vec<(Uuid, bool, Option<String>)> = sqlx::query_as(
        "select m.id, m.keep_power, m.relay_override from account_meters am join meters m on m.id = am.meter_id
         where am.account_id = $1 and am.left_at is null order by m.meter_number",
    )
    .bind(account)
    .fetch_all(&mut *conn)
    .await?;
    let schema = principal.company()?.schema.clone();
    let now = principal.now();
    let valid_s = if op == Op::Trip {
        TRIP_VALID_S
    } else {
        CLOSE_VALID_S
    };
    for (meter, keep_power, relay_override) in meters {
        if op == Op::Trip && keep_power {
            tracing::info!(%meter, "keep-power: the meter is not tripped");
            continue;
        }
        if op == Op::Close && relay_override.as_deref() == Some("open") {
            tracing::info!(%meter, "an operator tripped the meter: the rules do not close it");
            continue;
        }
        if op == Op::Trip && relay_override.is_some() {
            sqlx::query("update meters set relay_override = null where id = $1")
                .bind(meter)
                .execute(&mut *conn)
                .await?;
        }
        commands::enqueue(
            conn,
            &schema,
            &NewCommand {
                meter_id: meter,
                op,
                source: RULE_SOURCE.to_owned(),
                detail: format!("available {}", money_text(available)),
                expires_at: Some(now + Duration::seconds(valid_s)),
                batch_id: None,
                retry_of: None,
            },
            now,
        )
        .await?;
    }
    Ok(())
}

/// Tells `account`'s tenants about `action` now, with the account's current balance: the one way
/// the rules' messages are written (keep-power's release sends a fresh trip notice through it).
pub(crate) async fn tell(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
    action: Action,
) -> CoreResult<()> {
    let (shop, phone, available) = account_now(conn, account).await?;
    let notice_s = settings::load(conn).await?.trip_notice_s;
    let message = Message {
        account,
        shop: shop.trim(),
        phone: &phone,
        available,
        notice_s,
    };
    let written = Written {
        kind: action.as_str(),
        text: body(&message, action),
        params: params(&message, action),
    };
    notify(conn, principal, &message, written).await
}

/// Tells `account`'s tenants that `amount` was paid in (the top-up receipt), with the available
/// balance after it. Deferred through the night like every message but the trip notice.
pub(crate) async fn tell_top_up(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
    amount: AmountFen,
    receipt_no: &str,
) -> CoreResult<()> {
    let (shop, phone, available) = account_now(conn, account).await?;
    let message = Message {
        account,
        shop: shop.trim(),
        phone: &phone,
        available,
        notice_s: 0,
    };
    let written = Written {
        kind: "top_up",
        text: format!(
            "【充值成功】商铺 {} 充值 ¥{amount}（票据 {receipt_no}），可用余额 {}。",
            message.shop,
            money_text(available)
        ),
        params: vec![
            ("shop".to_owned(), message.shop.to_owned()),
            ("amount".to_owned(), format!("¥{amount}")),
            ("balance".to_owned(), money_text(available)),
        ],
    };
    notify(conn, principal, &message, written).await
}

/// `account`'s shop (`number name`), holder phone and available balance now.
async fn account_now(
    conn: &mut PgConnection,
    account: Uuid,
) -> CoreResult<(String, String, AmountFen)> {
    let (shop, phone): (String, String) = sqlx::query_as(
        "select s.number || ' ' || s.name, a.holder_phone
         from shop_accounts a join shops s on s.id = a.shop_id where a.id = $1",
    )
    .bind(account)
    .fetch_one(&mut *conn)
    .await?;
    let wallet = balance(conn, AccountKey::Wallet(account)).await?;
    let available = available(wallet, unposted_charges(conn, account).await?)?;
    Ok((shop, phone, available))
}

/// A message as written: its kind, whole text and template parameters.
struct Written {
    kind: &'static str,
    text: String,
    params: Vec<(String, String)>,
}

/// What a tenant message says about one account.
struct Message<'a> {
    account: Uuid,
    shop: &'a str,
    phone: &'a str,
    available: AmountFen,
    notice_s: i32,
}

/// An available balance as a tenant reads it: arrears as 欠费 ¥x, never a bare minus sign.
fn money_text(available: AmountFen) -> String {
    if available < AmountFen::ZERO {
        let owed = AmountFen::ZERO
            .checked_sub(available)
            .unwrap_or(AmountFen::ZERO);
        format!("欠费 ¥{owed}")
    } else {
        format!("¥{available}")
    }
}

fn body(m: &Message<'_>, action: Action) -> String {
    let (shop, money) = (m.shop, money_text(m.available));
    match action {
        Action::Alarm1 => {
            format!("【电费提醒】商铺 {shop} 可用余额 {money}，已低于提醒金额，请及时充值。")
        }
        Action::Alarm2 => {
            format!("【电费提醒】商铺 {shop} 可用余额 {money}，请尽快充值，以免停电。")
        }
        Action::TripNotice => format!(
            "【停电预告】商铺 {shop} {money}，{} 分钟后将自动断电；充值后立即恢复供电。",
            (m.notice_s + 59) / 60
        ),
        Action::Trip => format!("【已断电】商铺 {shop} {money}，已自动断电；充值后立即恢复供电。"),
        Action::Restore => format!("【已恢复供电】商铺 {shop} 已恢复供电，可用余额 {money}。"),
    }
}

/// The template parameters of a tenant message, in the order Tencent's positional templates
/// take them: the shop, the money, and for a trip notice the minutes.
fn params(m: &Message<'_>, action: Action) -> Vec<(String, String)> {
    let mut params = vec![
        ("shop".to_owned(), m.shop.to_owned()),
        ("amount".to_owned(), money_text(m.available)),
    ];
    if action == Action::TripNotice {
        params.push(("minutes".to_owned(), ((m.notice_s + 59) / 60).to_string()));
    }
    params
}

/// Who a tenant message goes to, and through which channel: the holder's phone, and every
/// active tenant user linked to the account — by WeChat when they linked an account and the
/// company has one, else by SMS to their phone (the sandbox for a login that is no phone
/// number); users who turned the kind off are left out (core::notify::preferences).
async fn recipients(
    conn: &mut PgConnection,
    m: &Message<'_>,
    kind: &str,
) -> CoreResult<Vec<(Option<Uuid>, String, String)>> {
    let sms = crate::notify::accounts::delivery(conn).await?.sms_channel;
    let by_phone = |to: &str| {
        if crate::notify::is_phone(to) {
            sms.clone()
        } else {
            "sandbox".to_owned()
        }
    };
    let wechat: bool = sqlx::query_scalar(
        "select exists (select 1 from notify_accounts where channel = 'wechat' and enabled)",
    )
    .fetch_one(&mut *conn)
    .await?;
    let users: Vec<(Uuid, String, String, Option<String>)> = sqlx::query_as(
        "select u.id, u.username, u.phone, u.wechat_openid
         from account_users au join users u on u.id = au.user_id
         where au.account_id = $1 and u.status = 'active' order by u.username",
    )
    .bind(m.account)
    .fetch_all(&mut *conn)
    .await?;
    let mut found: Vec<(Option<Uuid>, String, String)> = Vec::new();
    if !m.phone.is_empty() {
        found.push((None, m.phone.to_owned(), by_phone(m.phone)));
    }
    for (id, username, phone, openid) in users {
        if crate::notify::preferences::muted(conn, id, kind).await? {
            continue;
        }
        let to = if phone.is_empty() { username } else { phone };
        match openid {
            Some(openid) if wechat => found.push((Some(id), openid, "wechat".to_owned())),
            _ if found.iter().any(|(_, t, _)| *t == to) => {}
            _ => {
                let channel = by_phone(&to);
                found.push((Some(id), to, channel));
            }
        }
    }
    Ok(found)
}

/// Stores the message for each of the account's recipients; outside the night window it goes
/// at once, inside it waits for 08:00 local (a trip notice never waits: the trip itself is on
/// its way).
async fn notify(
    conn: &mut PgConnection,
    principal: &Principal,
    m: &Message<'_>,
    written: Written,
) -> CoreResult<()> {
    let kind = written.kind;
    let recipients = recipients(conn, m, kind).await?;
    let now = principal.now();
    let deliver_after = if kind == Action::TripNotice.as_str() {
        now
    } else {
        after_night(now, principal.tz())
    };
    let text = written.text;
    let params = serde_json::to_value(written.params).unwrap_or_default();
    if deliver_after > now {
        // Deferred to the morning: only the latest of each kind goes then.
        sqlx::query(
            "update notifications set state = 'superseded'
             where account_id = $1 and kind = $2 and state = 'queued' and deliver_after > $3",
        )
        .bind(m.account)
        .bind(kind)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    for (user_id, recipient, channel) in recipients {
        sqlx::query(
            "insert into notifications (id, account_id, kind, recipient, body, created_at,
                 deliver_after, user_id, channel, params)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(Uuid::now_v7())
        .bind(m.account)
        .bind(kind)
        .bind(&recipient)
        .bind(&text)
        .bind(now)
        .bind(deliver_after)
        .bind(user_id)
        .bind(channel)
        .bind(&params)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// `now`, or 08:00 local when `now` falls in the night window.
fn after_night(now: DateTime<Utc>, tz: chrono_tz::Tz) -> DateTime<Utc> {
    let local = now.with_timezone(&tz);
    let hour = local.hour();
    if (NIGHT_UNTIL_HOUR..NIGHT_FROM_HOUR).contains(&hour) {
        return now;
    }
    let day = if hour >= NIGHT_FROM_HOUR {
        local.date_naive() + Duration::days(1)
    } else {
        local.date_naive()
    };
    let morning = day.and_time(NaiveTime::from_hms_opt(NIGHT_UNTIL_HOUR, 0, 0).unwrap_or_default());
    morning
        .and_local_timezone(tz)
        .earliest()
        .map_or(now, |t| t.with_timezone(&Utc))
}

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub accounts: u64,
    pub actions: u64,
    pub errors: u64,
    /// The comparison of relays with the intended state ([`super::relay`]).
    pub relay: super::relay::RelayReport,
    /// Accounts told their power was cut or is back ([`super::confirm`]).
    pub told: u64,
}

/// Evaluates every open account of the principal's company whose rules may act now: a notice
/// running, tripped, or a wallet at or below alarm 1 (the others have nothing to cross). Each
/// account in its own transaction; one failure is logged and counted, not fatal.
#[tracing::instrument(skip_all)]
pub async fn sweep(pool: &PgPool, principal: &Principal) -> CoreResult<SweepReport> {
    let schema = principal.company()?.schema.clone();
    let accounts: Vec<Uuid> = {
        let mut tx = crate::db::begin_in(pool, &schema).await?;
        let ids = sqlx::query_scalar(
            "select a.id from shop_accounts a
             left join account_power p on p.account_id = a.id
             left join ledger_accounts w on w.key = 'wallet:' || a.id
             where a.state = 'open' and a.prepayment_mode = 'platform'
               and (p.noticed_at is not null or p.tripped_at is not null or p.alarm1_fired
                    or coalesce(w.balance_fen, 0)
                       <= coalesce(a.alarm1_fen, (select alarm1_fen from settings)))
             order by a.id",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        ids
    };
    let mut report = SweepReport::default();
    for account in accounts {
        let done = async {
            let mut tx = crate::db::begin_in(pool, &schema).await?;
            let actions = evaluate(&mut tx, principal, account).await?;
            tx.commit().await?;
            Ok::<_, CoreError>(actions.len() as u64)
        }
        .await;
        report.accounts += 1;
        match done {
            Ok(n) => report.actions += n,
            Err(e) => {
                tracing::error!(%account, error = %e, "the power rules failed for an account");
                metrics::counter!("power_rule_errors_total").increment(1);
                report.errors += 1;
            }
        }
    }
    // Then every relay against what the rules now intend.
    let mut tx = crate::db::begin_in(pool, &schema).await?;
    report.relay = super::relay::reconcile(&mut tx, principal).await?;
    // And the cuts and restores now seen on every meter are told.
    report.told = super::confirm::tell_confirmed(&mut tx, principal).await?;
    tx.commit().await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_wait_for_the_morning_only_at_night() {
        let tz = chrono_tz::Asia::Shanghai;
        let utc = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        // 23:30 local → 08:00 next day local (00:00 UTC).
        assert_eq!(
            after_night(utc("2026-12-01T15:30:00Z"), tz),
            utc("2026-12-02T00:00:00Z")
        );
        // 03:00 local → 08:00 the same day.
        assert_eq!(
            after_night(utc("2026-12-01T19:00:00Z"), tz),
            utc("2026-12-02T00:00:00Z")
        );
        // 10:00 local: at once.
        let day = utc("2026-12-02T02:00:00Z");
        assert_eq!(after_night(day, tz), day);
    }

    #[test]
    fn arrears_read_as_arrears_never_as_a_minus_sign() {
        assert_eq!(money_text(AmountFen::from_fen(-1_234)), "欠费 ¥12.34");
        assert_eq!(money_text(AmountFen::from_fen(500)), "¥5.00");
    }
}
