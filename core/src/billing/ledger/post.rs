//! Posting: the one way money moves. A [`Posting`] is checked against its template, written once
//! under its idempotency key (a replay returns the original; the same key with another request
//! is refused), its accounts' cached balances updated under row locks in the same database
//! transaction, and the overdraft rule applied to the locked balance.

use super::chart::AccountKey;
use super::templates::{self, TxnKind};
use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::AmountFen;
use crate::tenancy::actor::Actor;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// The Postgres channel told, in the posting's transaction, when a shop account's wallet moved
/// (payload `<schema>:<account id>`): the power rules listen on it (`power::evaluate`).
pub const AVAILABLE_CHANGED_CHANNEL: &str = "available_changed";

/// A money movement to post.
#[derive(Debug, Clone)]
pub struct Posting {
    pub kind: TxnKind,
    /// Derived (`rate:<meter>:<ms>`, `close:<account>`) or `client:<Idempotency-Key>`.
    pub idempotency_key: String,
    /// A digest of the request ([`request_hash`]); a replay must carry the same.
    pub request_hash: String,
    pub shop_account: Option<Uuid>,
    pub event_at: DateTime<Utc>,
    /// `cash`, `card`, … for counter and online movements.
    pub method: Option<String>,
    /// Takes the next receipt number of the booking day (top-ups, refunds, reversals, payouts).
    pub receipt: bool,
    pub reverses: Option<Uuid>,
    pub memo: String,
    pub legs: Vec<(AccountKey, AmountFen)>,
    /// The overdraft rule: after posting, `account` holds at least `fen` (a refund keeps the
    /// wallet at or above the unposted charges, so the available balance stays ≥ 0).
    pub keep_at_least: Option<(AccountKey, AmountFen)>,
}

/// A stored ledger transaction with its entries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Transaction {
    pub id: Uuid,
    pub kind: TxnKind,
    pub idempotency_key: String,
    pub shop_account_id: Option<Uuid>,
    pub event_at: DateTime<Utc>,
    pub booked_on: NaiveDate,
    pub posted_at: DateTime<Utc>,
    pub actor: String,
    pub method: Option<String>,
    pub receipt_no: Option<String>,
    pub reverses: Option<Uuid>,
    pub memo: String,
    #[serde(serialize_with = "serialize_legs")]
    pub legs: Vec<(AccountKey, AmountFen)>,
}

fn serialize_legs<S: serde::Serializer>(
    legs: &[(AccountKey, AmountFen)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = serializer.serialize_seq(Some(legs.len()))?;
    for (key, amount) in legs {
        seq.serialize_element(
            &serde_json::json!({ "account": key.to_string(), "amount_fen": amount }),
        )?;
    }
    seq.end()
}

/// What [`post`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub txn: Transaction,
    /// The key was posted before with the same request: nothing moved now.
    pub replayed: bool,
}

/// A digest of what a request asked for, to tell a replay from a reused key.
pub fn request_hash(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How a transaction names who posted it.
fn actor_text(principal: &Principal) -> String {
    match &principal.actor {
        Actor::Person => format!("user:{}", principal.user_id),
        Actor::System { worker } => format!("system:{worker}"),
    }
}

/// A broken invariant: a bug in the caller, never the user's doing. Logged, and the whole
/// database transaction is abandoned by the caller's `?`.
fn invariant(what: String) -> CoreError {
    tracing::error!(%what, "ledger invariant broken");
    CoreError::Internal(format!("ledger invariant: {what}"))
}

/// Posts `posting` in the caller's database transaction (company schema on the search path).
#[tracing::instrument(skip_all, fields(kind = %posting.kind, key = %posting.idempotency_key))]
pub async fn post(
    conn: &mut PgConnection,
    principal: &Principal,
    posting: &Posting,
) -> CoreResult<Posted> {
    // Same-key posters queue here, so the second sees the first's row once it commits (and a
    // receipt number is never drawn for a replay).
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1, 7))")
        .bind(&posting.idempotency_key)
        .execute(&mut *conn)
        .await?;
    if let Some(posted) = replay(conn, &posting.idempotency_key, &posting.request_hash).await? {
        return Ok(posted);
    }
    let original = match posting.reverses {
        Some(id) => Some(
            load(conn, id)
                .await?
                .ok_or(CoreError::NotFound("transaction"))?,
        ),
        None => None,
    };
    templates::conforms(
        posting.kind,
        &posting.legs,
        original.as_ref().map(|o| (o.kind, o.legs.as_slice())),
    )
    .map_err(invariant)?;
    let booked_on = principal.today();
    crate::billing::books::guard_open(conn, booked_on).await?;
    let receipt_no = if posting.receipt {
        Some(next_receipt_no(conn, booked_on).await?)
    } else {
        None
    };
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into ledger_transactions (id, kind, idempotency_key, request_hash, shop_account_id,
             event_at, booked_on, actor, method, receipt_no, reverses, memo)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(id)
    .bind(posting.kind)
    .bind(&posting.idempotency_key)
    .bind(&posting.request_hash)
    .bind(posting.shop_account)
    .bind(posting.event_at)
    .bind(booked_on)
    .bind(actor_text(principal))
    .bind(&posting.method)
    .bind(&receipt_no)
    .bind(posting.reverses)
    .bind(&posting.memo)
    .execute(&mut *conn)
    .await?;
    apply_entries(conn, &[(id, posting)]).await?;
    tell_wallets(conn, principal, &[(id, posting)]).await?;
    let txn = load(conn, id)
        .await?
        .ok_or_else(|| invariant(format!("transaction {id} vanished")))?;
    Ok(Posted {
        txn,
        replayed: false,
    })
}

/// Posts many system postings at once in the caller's database transaction — the rating pass's
/// batches of charges — with the same rules as [`post`] (templates, idempotency keys, the books
/// lock, locked running balances, the overdraft rule) but a handful of statements for all of
/// them. No receipts and no reversals here (those are one counter request each). Returns each
/// posting's transaction id, in order: the original one for a replayed key.
#[tracing::instrument(skip_all, fields(postings = postings.len()))]
pub async fn post_many(
    conn: &mut PgConnection,
    principal: &Principal,
    postings: &[Posting],
) -> CoreResult<Vec<Uuid>> {
    if postings.is_empty() {
        return Ok(Vec::new());
    }
    let mut keys: Vec<&str> = Vec::with_capacity(postings.len());
    for posting in postings {
        if posting.receipt || posting.reverses.is_some() {
            return Err(invariant(format!(
                "{} posts alone: it takes a receipt or reverses",
                posting.idempotency_key
            )));
        }
        templates::conforms(posting.kind, &posting.legs, None).map_err(invariant)?;
        keys.push(&posting.idempotency_key);
    }
    keys.sort_unstable();
    if keys.windows(2).any(|w| w[0] == w[1]) {
        return Err(invariant("one idempotency key twice in a batch".into()));
    }
    // The same per-key locks as `post`, taken in key order so two batches never deadlock.
    sqlx::query(
        "select count(pg_advisory_xact_lock(hashtextextended(k, 7)))
         from (select k from unnest($1::text[]) as u(k) order by k) sorted",
    )
    .bind(&keys)
    .execute(&mut *conn)
    .await?;
    let stored: std::collections::HashMap<String, (Uuid, String)> = sqlx::query(
        "select idempotency_key, id, request_hash from ledger_transactions
         where idempotency_key = any($1)",
    )
    .bind(&keys)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok((
            r.try_get("idempotency_key")?,
            (r.try_get("id")?, r.try_get("request_hash")?),
        ))
    })
    .collect::<CoreResult<_>>()?;
    let mut ids = Vec::with_capacity(postings.len());
    let mut new: Vec<(Uuid, &Posting)> = Vec::new();
    for posting in postings {
        match stored.get(&posting.idempotency_key) {
            Some((id, hash)) if *hash == posting.request_hash => ids.push(*id),
            Some(_) => return Err(CoreError::IdempotencyKeyReused),
            None => {
                let id = Uuid::now_v7();
                ids.push(id);
                new.push((id, posting));
            }
        }
    }
    if new.is_empty() {
        return Ok(ids);
    }
    let booked_on = principal.today();
    crate::billing::books::guard_open(conn, booked_on).await?;
    let column = |f: &dyn Fn(&Posting) -> Option<String>| -> Vec<Option<String>> {
        new.iter().map(|(_, p)| f(p)).collect()
    };
    let txn_ids: Vec<Uuid> = new.iter().map(|(id, _)| *id).collect();
    sqlx::query(
        "insert into ledger_transactions (id, kind, idempotency_key, request_hash, shop_account_id,
             event_at, booked_on, actor, method, memo)
         select id, kind, k, h, a, e, $7, $8, m, memo
         from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::timestamptz[],
                     $9::text[], $10::text[]) as u(id, kind, k, h, a, e, m, memo)",
    )
    .bind(&txn_ids)
    .bind(column(&|p| Some(p.kind.to_string())))
    .bind(column(&|p| Some(p.idempotency_key.clone())))
    .bind(column(&|p| Some(p.request_hash.clone())))
    .bind(new.iter().map(|(_, p)| p.shop_account).collect::<Vec<_>>())
    .bind(new.iter().map(|(_, p)| p.event_at).collect::<Vec<_>>())
    .bind(booked_on)
    .bind(actor_text(principal))
    .bind(column(&|p| p.method.clone()))
    .bind(column(&|p| Some(p.memo.clone())))
    .execute(&mut *conn)
    .await?;
    apply_entries(conn, &new).await?;
    tell_wallets(conn, principal, &new).await?;
    Ok(ids)
}

/// NOTIFYs [`AVAILABLE_CHANGED_CHANNEL`] once per shop account whose wallet the postings moved
/// (delivered only if the transaction commits).
async fn tell_wallets(
    conn: &mut PgConnection,
    principal: &Principal,
    postings: &[(Uuid, &Posting)],
) -> CoreResult<()> {
    let accounts: std::collections::BTreeSet<Uuid> = postings
        .iter()
        .flat_map(|(_, p)| p.legs.iter())
        .filter_map(|(key, _)| match key {
            AccountKey::Wallet(account) => Some(*account),
            _ => None,
        })
        .collect();
    if accounts.is_empty() {
        return Ok(());
    }
    let schema = principal.company()?.schema.as_str().to_owned();
    let payloads: Vec<String> = accounts.iter().map(|a| format!("{schema}:{a}")).collect();
    sqlx::query("select count(pg_notify($1, p)) from unnest($2::text[]) as u(p)")
        .bind(AVAILABLE_CHANGED_CHANNEL)
        .bind(&payloads)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Writes the entries of newly inserted transactions and moves the cached balances, under row
/// locks taken in key order (so two postings on the same accounts never deadlock). The postings
/// apply in order, each one's overdraft rule checked on the balance it leaves.
async fn apply_entries(conn: &mut PgConnection, postings: &[(Uuid, &Posting)]) -> CoreResult<()> {
    let mut accounts: std::collections::BTreeMap<String, &AccountKey> = Default::default();
    for (_, posting) in postings {
        for (key, _) in &posting.legs {
            accounts.entry(key.to_string()).or_insert(key);
        }
    }
    let keys: Vec<&String> = accounts.keys().collect();
    let classes: Vec<&str> = accounts.values().map(|k| k.class().as_str()).collect();
    let shop_accounts: Vec<Option<Uuid>> = accounts.values().map(|k| k.shop_account()).collect();
    let meters: Vec<Option<Uuid>> = accounts.values().map(|k| k.meter()).collect();
    sqlx::query(
        "insert into ledger_accounts (key, class, shop_account_id, meter_id)
         select * from unnest($1::text[], $2::text[], $3::uuid[], $4::uuid[])
         on conflict (key) do nothing",
    )
    .bind(&keys)
    .bind(&classes)
    .bind(&shop_accounts)
    .bind(&meters)
    .execute(&mut *conn)
    .await?;
    // Only accounts with a running balance are locked and moved (see
    // `AccountKey::keeps_running_balance`); the company-wide ones are their entries' sum.
    let running: Vec<&String> = accounts
        .iter()
        .filter(|(_, k)| k.keeps_running_balance())
        .map(|(text, _)| text)
        .collect();
    let rows = sqlx::query(
        "select key, balance_fen from ledger_accounts where key = any($1) order by key for update",
    )
    .bind(&running)
    .fetch_all(&mut *conn)
    .await?;
    // Each running account: (balance, postings that moved it).
    let mut balances: std::collections::BTreeMap<String, (AmountFen, i64)> = rows
        .iter()
        .map(|r| Ok((r.try_get("key")?, (r.try_get("balance_fen")?, 0))))
        .collect::<CoreResult<_>>()?;
    let (mut txn_ids, mut seqs, mut entry_keys, mut amounts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (id, posting) in postings {
        if let Some((guarded, _)) = &posting.keep_at_least {
            debug_assert!(
                guarded.keeps_running_balance(),
                "the overdraft rule reads a locked balance"
            );
        }
        for (i, (key, amount)) in posting.legs.iter().enumerate() {
            let text = key.to_string();
            txn_ids.push(*id);
            seqs.push(i16::try_from(i).unwrap_or(i16::MAX));
            amounts.push(amount.fen());
            entry_keys.push(text.clone());
            if !key.keeps_running_balance() {
                continue;
            }
            let (balance, moves) = balances
                .get_mut(&text)
                .ok_or_else(|| invariant(format!("account {text} not locked")))?;
            let before = *balance;
            let after = before.checked_add(*amount).ok_or_else(|| {
                CoreError::Conflict(format!("the balance of {text} would overflow"))
            })?;
            if let Some((guarded, floor)) = &posting.keep_at_least {
                if guarded == key && after < *floor {
                    let available = before.checked_sub(*floor).unwrap_or(AmountFen::ZERO);
                    return Err(CoreError::InsufficientBalance(format!(
                        "only ¥{available} is available"
                    )));
                }
            }
            *balance = after;
            *moves += 1;
        }
    }
    sqlx::query(
        "insert into ledger_entries (txn_id, seq, account_key, amount_fen)
         select * from unnest($1::uuid[], $2::smallint[], $3::text[], $4::bigint[])",
    )
    .bind(&txn_ids)
    .bind(&seqs)
    .bind(&entry_keys)
    .bind(&amounts)
    .execute(&mut *conn)
    .await?;
    let moved: Vec<(&String, &(AmountFen, i64))> =
        balances.iter().filter(|(_, (_, n))| *n > 0).collect();
    let keys: Vec<&String> = moved.iter().map(|(k, _)| *k).collect();
    let new_balances: Vec<i64> = moved.iter().map(|(_, (b, _))| b.fen()).collect();
    let counts: Vec<i64> = moved.iter().map(|(_, (_, n))| *n).collect();
    sqlx::query(
        "update ledger_accounts a set balance_fen = n.balance, entry_count = a.entry_count + n.moves
         from unnest($1::text[], $2::bigint[], $3::bigint[]) as n(key, balance, moves)
         where a.key = n.key",
    )
    .bind(&keys)
    .bind(&new_balances)
    .bind(&counts)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The next receipt number of `day`: `PT` + date + a four-digit sequence, gapless (the counter
/// moves in the posting's transaction).
async fn next_receipt_no(conn: &mut PgConnection, day: NaiveDate) -> CoreResult<String> {
    let n: i32 = sqlx::query_scalar(
        "insert into receipt_sequences (day, last_no) values ($1, 1)
         on conflict (day) do update set last_no = receipt_sequences.last_no + 1
         returning last_no",
    )
    .bind(day)
    .fetch_one(&mut *conn)
    .await?;
    Ok(format!("PT{}{n:04}", day.format("%Y%m%d")))
}

/// The balance of `key` (0 for an account never posted to): the cached running balance, or the
/// sum of the entries of a company-wide account.
pub async fn balance(conn: &mut PgConnection, key: AccountKey) -> CoreResult<AmountFen> {
    if !key.keeps_running_balance() {
        let summed: i64 = sqlx::query_scalar(
            "select coalesce(sum(amount_fen), 0)::bigint from ledger_entries where account_key = $1",
        )
        .bind(key.to_string())
        .fetch_one(&mut *conn)
        .await?;
        return Ok(AmountFen::from_fen(summed));
    }
    let found: Option<AmountFen> =
        sqlx::query_scalar("select balance_fen from ledger_accounts where key = $1")
            .bind(key.to_string())
            .fetch_optional(&mut *conn)
            .await?;
    Ok(found.unwrap_or(AmountFen::ZERO))
}

/// The transaction posted before under `key`: the original when `request_hash` is the same
/// request, `IdempotencyKeyReused` when it is another.
pub async fn replay(
    conn: &mut PgConnection,
    key: &str,
    request_hash: &str,
) -> CoreResult<Option<Posted>> {
    match find_by_key(conn, key).await? {
        Some((txn, hash)) if hash == request_hash => Ok(Some(Posted {
            txn,
            replayed: true,
        })),
        Some(_) => Err(CoreError::IdempotencyKeyReused),
        None => Ok(None),
    }
}

async fn find_by_key(
    conn: &mut PgConnection,
    key: &str,
) -> CoreResult<Option<(Transaction, String)>> {
    let row =
        sqlx::query("select id, request_hash from ledger_transactions where idempotency_key = $1")
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(row) = row else { return Ok(None) };
    let id: Uuid = row.try_get("id")?;
    let hash: String = row.try_get("request_hash")?;
    let txn = load(conn, id)
        .await?
        .ok_or_else(|| invariant(format!("transaction {id} vanished")))?;
    Ok(Some((txn, hash)))
}

/// One transaction with its entries.
pub async fn load(conn: &mut PgConnection, id: Uuid) -> CoreResult<Option<Transaction>> {
    Ok(load_many(conn, &[id]).await?.into_iter().next())
}

/// Transactions by id, in the order of `ids`, with their entries (in entry order).
pub async fn load_many(conn: &mut PgConnection, ids: &[Uuid]) -> CoreResult<Vec<Transaction>> {
    let rows = sqlx::query(
        "select t.id, t.kind, t.idempotency_key, t.shop_account_id, t.event_at, t.booked_on,
                t.posted_at, t.actor, t.method, t.receipt_no, t.reverses, t.memo,
                array_agg(e.account_key order by e.seq) as keys,
                array_agg(e.amount_fen order by e.seq) as amounts
         from unnest($1::uuid[]) with ordinality as wanted(id, n)
         join ledger_transactions t on t.id = wanted.id
         join ledger_entries e on e.txn_id = t.id
         group by t.id, wanted.n order by wanted.n",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(transaction_from_row).collect()
}

pub(crate) fn transaction_from_row(row: &sqlx::postgres::PgRow) -> CoreResult<Transaction> {
    let keys: Vec<String> = row.try_get("keys")?;
    let amounts: Vec<i64> = row.try_get("amounts")?;
    let legs = keys
        .iter()
        .zip(amounts)
        .map(|(k, a)| {
            k.parse::<AccountKey>()
                .map(|key| (key, AmountFen::from_fen(a)))
                .map_err(|e| invariant(e.to_string()))
        })
        .collect::<CoreResult<Vec<_>>>()?;
    let kind: String = row.try_get("kind")?;
    Ok(Transaction {
        id: row.try_get("id")?,
        kind: kind
            .parse()
            .map_err(|_| invariant(format!("unknown transaction kind {kind}")))?,
        idempotency_key: row.try_get("idempotency_key")?,
        shop_account_id: row.try_get("shop_account_id")?,
        event_at: row.try_get("event_at")?,
        booked_on: row.try_get("booked_on")?,
        posted_at: row.try_get("posted_at")?,
        actor: row.try_get("actor")?,
        method: row.try_get("method")?,
        receipt_no: row.try_get("receipt_no")?,
        reverses: row.try_get("reverses")?,
        memo: row.try_get("memo")?,
        legs,
    })
}
