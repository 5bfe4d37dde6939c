//! The DTU registration rule (DESIGN.md: Ingest, DTU dial-in), platform-wide.
//!
//! A DTU's first packet is registration ‖ optional 1–2 ASCII port digits ‖ anything after, and
//! ingest binds the socket to the gateway whose registration the packet starts with. If one
//! registration could be the beginning of another, a company could enter `SECB-REG-SECRET-` and
//! be handed the DTU of another company whose registration is `SECB-REG-SECRET-1` whenever that
//! one is suspended, mistyped or not entered yet — and poll, later trip, its meters. So:
//! - registrations are [`BYTES_MIN`]..=[`BYTES_MAX`] bytes;
//! - no registration is a prefix of another, either way round, across all companies (port digits
//!   appended to the shorter one make a packet that starts with it, so the plain prefix test
//!   covers them);
//! - a refused overlap says nothing of whose it is, is recorded outside the refused request's
//!   transaction (`control.registration_refusals`), audited in the company's log and the
//!   platform's, and after [`REFUSALS_PER_HOUR_MAX`] refusals in an hour the company's next
//!   registrations are refused *unchecked* — so the answer cannot be used to guess another
//!   company's bytes one at a time;
//! - registrations entered before the rule that break it are listed ([`problems`]) to their
//!   company and to platform staff to change; ingest refuses a dial-in that matches two.

use crate::auth::Principal;
use crate::db;
use crate::kernel::error::{CoreError, CoreResult};
use crate::tenancy::audit;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// The shortest registration: a one-byte one would catch every unmatched DTU on the platform.
pub const BYTES_MIN: usize = 6;
/// The longest (ingest reads a first packet of up to 256 bytes).
pub const BYTES_MAX: usize = 128;
/// Refused overlaps a company may cause in an hour before registrations are refused unchecked.
pub const REFUSALS_PER_HOUR_MAX: i64 = 10;

/// The message for a registration of the wrong length, if it is (a plain field check, so forms
/// show it with the other fields' errors).
pub fn length_problem(registration_hex: &str) -> Option<String> {
    let bytes = registration_hex.len() / 2;
    (!(BYTES_MIN..=BYTES_MAX).contains(&bytes))
        .then(|| format!("registrations are {BYTES_MIN} to {BYTES_MAX} bytes"))
}

/// Checks a registration (lowercase hex of its bytes) that `principal`'s company wants to give
/// gateway `own` (or a new gateway): its length, the hourly limit, and overlaps with every other
/// registration on the platform.
#[tracing::instrument(skip_all)]
pub async fn check(
    conn: &mut PgConnection,
    principal: &Principal,
    registration_hex: &str,
    own: Option<Uuid>,
) -> CoreResult<()> {
    if let Some(problem) = length_problem(registration_hex) {
        return Err(CoreError::field("registration", problem));
    }
    let company_id = principal.company()?.id;
    // One registration change at a time platform-wide, until this transaction ends: two
    // overlapping registrations entered at once must not both pass the check.
    sqlx::query("select pg_advisory_xact_lock(hashtext('powertab.dtu_registrations'))")
        .execute(&mut *conn)
        .await?;
    let recent: i64 = sqlx::query_scalar(
        "select count(*) from control.registration_refusals
         where company_id = $1 and at > now() - interval '1 hour'",
    )
    .bind(company_id)
    .fetch_one(&mut *conn)
    .await?;
    if recent >= REFUSALS_PER_HOUR_MAX {
        refused(conn, principal, registration_hex, "throttled").await?;
        return Err(CoreError::Throttled(
            "too many refused registrations in the last hour; try again later".into(),
        ));
    }
    let overlaps: bool = sqlx::query_scalar(
        "select exists (select 1 from control.gateway_directory
             where registration_hex is not null
               and ($2::uuid is null or gateway_id <> $2)
               and (starts_with($1, registration_hex) or starts_with(registration_hex, $1)))",
    )
    .bind(registration_hex)
    .bind(own)
    .fetch_one(&mut *conn)
    .await?;
    if overlaps {
        refused(conn, principal, registration_hex, "overlap").await?;
        return Err(CoreError::field(
            "registration",
            "this registration is taken, or one registration would be the beginning of the \
             other: choose a longer or different one",
        ));
    }
    Ok(())
}

/// Records a refusal where it survives the request's rollback: the refusals table, the
/// company's audit log and the platform's. Without a side pool (an actor built outside a
/// request) it is written in `conn`, best effort.
async fn refused(
    conn: &mut PgConnection,
    principal: &Principal,
    registration_hex: &str,
    reason: &str,
) -> CoreResult<()> {
    metrics::counter!("registration_refusals_total", "reason" => reason.to_owned()).increment(1);
    tracing::warn!(
        company = principal.company.as_ref().map(|c| c.id),
        user = %principal.username,
        reason,
        "refused a DTU registration"
    );
    match &principal.side_pool {
        Some(pool) => {
            let company = principal.company()?;
            let mut tx = db::begin_in(pool, &company.schema).await?;
            write_refusal(&mut tx, principal, registration_hex, reason).await?;
            tx.commit().await?;
            Ok(())
        }
        None => write_refusal(conn, principal, registration_hex, reason).await,
    }
}

async fn write_refusal(
    conn: &mut PgConnection,
    principal: &Principal,
    registration_hex: &str,
    reason: &str,
) -> CoreResult<()> {
    let company_id = principal.company()?.id;
    sqlx::query(
        "insert into control.registration_refusals (company_id, registration_hex, reason, actor_name, source_ip)
         values ($1, $2, $3, $4, $5)",
    )
    .bind(company_id)
    .bind(registration_hex)
    .bind(reason)
    .bind(&principal.username)
    .bind(principal.source_ip.as_deref())
    .execute(&mut *conn)
    .await?;
    // The company's own log keeps no bytes (they may hold a secret of somebody else's).
    let detail = serde_json::json!({"reason": reason});
    audit::record(
        conn,
        principal,
        "gateway.registration_refused",
        "gateway",
        None,
        None,
        Some(detail.clone()),
    )
    .await?;
    audit::record_platform(
        conn,
        principal,
        "gateway.registration_refused",
        Some(company_id),
        None,
        Some(serde_json::json!({"reason": reason, "registration_hex": registration_hex})),
    )
    .await
}

/// A registration entered before the rule that breaks it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Problem {
    pub gateway_id: Uuid,
    pub identity: String,
    /// `too_short`, `too_long` or `overlaps` (another registration is a prefix of this one, or
    /// the other way round; a company is not told whose).
    pub problem: String,
    /// Platform staff only: the company of the gateway.
    pub company_id: Option<i64>,
    /// Platform staff only: the gateways it overlaps, as `company_id:identity`.
    pub overlaps_with: Vec<String>,
}

/// Registrations that break the rule: a company's own (`Some(company)`), or all of them for
/// platform staff (`None`).
#[tracing::instrument(skip_all)]
pub async fn problems(
    conn: &mut PgConnection,
    company_id: Option<i64>,
) -> CoreResult<Vec<Problem>> {
    let rows = sqlx::query(
        "select d.gateway_id, d.identity, d.company_id, length(d.registration_hex) / 2 as bytes,
                coalesce(array_agg(o.company_id::text || ':' || o.identity order by o.identity)
                         filter (where o.identity is not null), '{}') as overlaps
         from control.gateway_directory d
         left join control.gateway_directory o
           on o.registration_hex is not null and o.gateway_id <> d.gateway_id
          and (starts_with(d.registration_hex, o.registration_hex) or starts_with(o.registration_hex, d.registration_hex))
         where d.registration_hex is not null and ($1::bigint is null or d.company_id = $1)
         group by d.gateway_id, d.identity, d.company_id, d.registration_hex
         having length(d.registration_hex) / 2 not between $2 and $3 or count(o.identity) > 0
         order by d.company_id, d.identity
         limit 1000",
    )
    .bind(company_id)
    .bind(BYTES_MIN as i32)
    .bind(BYTES_MAX as i32)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            let bytes: i32 = r.try_get("bytes")?;
            let overlaps: Vec<String> = r.try_get("overlaps")?;
            let problem = if bytes < BYTES_MIN as i32 {
                "too_short"
            } else if bytes > BYTES_MAX as i32 {
                "too_long"
            } else {
                "overlaps"
            };
            let platform = company_id.is_none();
            Ok(Problem {
                gateway_id: r.try_get("gateway_id")?,
                identity: r.try_get("identity")?,
                problem: problem.into(),
                company_id: platform.then(|| r.try_get("company_id")).transpose()?,
                overlaps_with: if platform { overlaps } else { Vec::new() },
            })
        })
        .collect()
}

/// A refused attempt as platform staff see it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Refusal {
    pub company_id: i64,
    pub registration_hex: String,
    pub reason: String,
    pub actor_name: String,
    pub source_ip: Option<String>,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// The latest refusals, for platform staff.
#[tracing::instrument(skip_all)]
pub async fn refusals(conn: &mut PgConnection, principal: &Principal) -> CoreResult<Vec<Refusal>> {
    if !principal.role.is_platform() || principal.company.is_some() {
        return Err(CoreError::NotFound("resource"));
    }
    let rows = sqlx::query(
        "select company_id, registration_hex, reason, actor_name, source_ip, at
         from control.registration_refusals order by at desc limit 500",
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Refusal {
                company_id: r.try_get("company_id")?,
                registration_hex: r.try_get("registration_hex")?,
                reason: r.try_get("reason")?,
                actor_name: r.try_get("actor_name")?,
                source_ip: r.try_get("source_ip")?,
                at: r.try_get("at")?,
            })
        })
        .collect()
}
