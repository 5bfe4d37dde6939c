//! The command queue against a real PostgreSQL (DESIGN.md: Commands): claims are atomic across
//! processes, only the designed transitions happen, a command lost between claim and outcome is
//! recovered through its lease, and a read-now is verified only once its reading is stored.

mod common;

use chrono::{Duration, Utc};
use common::Field;
use powertab_core::commands::{self, Claimed, NewCommand, NotClaimed, Op, Settled, State};
use powertab_core::db;
use powertab_ingest::driver::MeterValues;
use powertab_ingest::store::{store_batch, NewReading};
use uuid::Uuid;

async fn enqueue(field: &Field, meter_id: Uuid, op: Op, valid_s: Option<i64>) -> Uuid {
    let now = Utc::now();
    let mut tx = db::begin_in(&field.db.pool, &field.schema).await.unwrap();
    let command = commands::enqueue(
        &mut tx,
        &field.schema,
        &NewCommand {
            meter_id,
            op,
            source: "rule:test".into(),
            detail: String::new(),
            expires_at: valid_s.map(|s| now + Duration::seconds(s)),
            batch_id: None,
            retry_of: None,
        },
        now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!((command.op, command.state), (op, State::Queued));
    command.id
}

async fn claim(
    field: &Field,
    id: Uuid,
    meter_id: Uuid,
    holder: &str,
    lease: Duration,
    now: chrono::DateTime<Utc>,
) -> Result<Claimed, NotClaimed> {
    let mut tx = db::begin_in(&field.db.pool, &field.schema).await.unwrap();
    let claimed = commands::claim(&mut tx, id, meter_id, &Op::ALL, holder, lease, now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    claimed
}

async fn settle(field: &Field, id: Uuid, to: State) -> Settled {
    let mut tx = db::begin_in(&field.db.pool, &field.schema).await.unwrap();
    let settled = commands::settle(&mut tx, id, to, "test", None, Utc::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    settled
}

async fn state(field: &Field, id: Uuid) -> (String, i32) {
    sqlx::query_as(&format!(
        "select state, attempts from {}.commands where id = $1",
        field.schema.as_str()
    ))
    .bind(id)
    .fetch_one(&field.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn of_two_racing_claimers_exactly_one_wins() {
    let field = Field::new("acme", "dtu-1", b"REG-0001", &["modbus_rtu"]).await;
    let meter = field.meter(0, "dtsy1352", "1", "1001").await;
    for round in 0..20 {
        let id = enqueue(&field, meter, Op::ReadNow, Some(120)).await;
        let now = Utc::now();
        let lease = Duration::seconds(60);
        let (a, b) = tokio::join!(
            claim(&field, id, meter, "ingest-a", lease, now),
            claim(&field, id, meter, "ingest-b", lease, now),
        );
        let winners = [&a, &b].iter().filter(|c| c.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: {a:?} / {b:?}");
        let loser = if a.is_ok() { b } else { a };
        assert_eq!(loser, Err(NotClaimed::Gone));
        assert_eq!(state(&field, id).await, ("sent".into(), 1));
    }
}

#[tokio::test]
async fn only_designed_transitions_happen() {
    let field = Field::new("acme", "dtu-1", b"REG-0001", &["modbus_rtu"]).await;
    let meter = field.meter(0, "dtsy1352", "1", "1001").await;
    let id = enqueue(&field, meter, Op::Trip, Some(120)).await;
    // Queued → verified skips the send: refused, the command stays queued.
    assert_eq!(
        settle(&field, id, State::Verified).await,
        Settled::Refused(State::Queued)
    );
    assert_eq!(
        claim(&field, id, meter, "a", Duration::seconds(60), Utc::now())
            .await
            .map(|c| c.op),
        Ok(Op::Trip)
    );
    assert_eq!(
        settle(&field, id, State::Acknowledged).await,
        Settled::Moved(State::Sent)
    );
    assert_eq!(
        settle(&field, id, State::Verified).await,
        Settled::Moved(State::Acknowledged)
    );
    // Final is final: a late failure or a second ack changes nothing.
    for late in [
        State::Failed,
        State::Acknowledged,
        State::Queued,
        State::Sent,
    ] {
        assert_eq!(
            settle(&field, id, late).await,
            Settled::Refused(State::Verified)
        );
    }
    assert_eq!(state(&field, id).await.0, "verified");
    // A command of another meter list is not found.
    let mut tx = db::begin_in(&field.db.pool, &field.schema).await.unwrap();
    let foreign = commands::settle(
        &mut tx,
        id,
        State::Failed,
        "",
        Some(&[Uuid::now_v7()]),
        Utc::now(),
    )
    .await;
    assert!(matches!(
        foreign,
        Err(powertab_core::CoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_command_lost_between_claim_and_outcome_is_recovered_through_its_lease() {
    let field = Field::new("acme", "dtu-1", b"REG-0001", &["modbus_rtu"]).await;
    let meter = field.meter(0, "dtsy1352", "1", "1001").await;
    let id = enqueue(&field, meter, Op::ReadNow, Some(600)).await;
    let t0 = Utc::now();
    // A process claims it and dies before sending.
    claim(&field, id, meter, "crashed", Duration::seconds(60), t0)
        .await
        .unwrap();
    let recover = |at: chrono::DateTime<Utc>| {
        let field = &field;
        async move {
            let mut tx = db::begin_in(&field.db.pool, &field.schema).await.unwrap();
            let n = commands::recover(&mut tx, &[meter], at).await.unwrap();
            tx.commit().await.unwrap();
            n
        }
    };
    // Within its lease nobody takes it over, not even the next session of the bus.
    assert_eq!(recover(t0 + Duration::seconds(30)).await, 0);
    assert_eq!(state(&field, id).await.0, "sent");
    // After it, the process now holding the bus puts it back and carries it out.
    assert_eq!(recover(t0 + Duration::seconds(61)).await, 1);
    assert_eq!(state(&field, id).await, ("queued".into(), 1));
    let again = claim(
        &field,
        id,
        meter,
        "next",
        Duration::seconds(60),
        t0 + Duration::seconds(62),
    )
    .await
    .unwrap();
    assert_eq!(again.attempts, 2);
    // Start-up does not fail anything: an unrelated meter's recovery leaves it alone.
    let mut tx = db::begin_in(&field.db.pool, &field.schema).await.unwrap();
    assert_eq!(
        commands::recover(&mut tx, &[Uuid::now_v7()], t0 + Duration::hours(1))
            .await
            .unwrap(),
        0
    );
}

fn reading(meter_id: Uuid, at: chrono::DateTime<Utc>, relay_closed: Option<bool>) -> NewReading {
    NewReading {
        meter_id,
        read_at: at,
        values: MeterValues {
            energy_wh: 1_000,
            relay_closed,
            ..MeterValues::default()
        },
        raw: vec![],
        ratio_mismatch: false,
    }
}

#[tokio::test]
async fn a_read_now_is_verified_only_once_its_reading_is_stored() {
    let field = Field::new("acme", "dtu-1", b"REG-0001", &["modbus_rtu"]).await;
    let meter = field.meter(0, "dtsy1352", "1", "1001").await;
    let id = enqueue(&field, meter, Op::ReadNow, Some(120)).await;
    let sent = claim(&field, id, meter, "a", Duration::seconds(60), Utc::now())
        .await
        .unwrap()
        .sent_at;
    settle(&field, id, State::Acknowledged).await;
    let pool = &field.db.pool;
    // A reading from before the send proves nothing; one the writer rejects is not stored.
    let old = store_batch(
        pool,
        &field.schema,
        &[reading(meter, sent - Duration::seconds(5), None)],
    )
    .await
    .unwrap();
    assert_eq!((old.stored, old.verified), (1, 0));
    let future = sent + Duration::hours(1);
    let rejected = store_batch(pool, &field.schema, &[reading(meter, future, None)])
        .await
        .unwrap();
    assert_eq!((rejected.rejected_time, rejected.verified), (1, 0));
    assert_eq!(state(&field, id).await.0, "acknowledged");
    let fresh = store_batch(
        pool,
        &field.schema,
        &[reading(meter, sent + Duration::milliseconds(400), None)],
    )
    .await
    .unwrap();
    assert_eq!((fresh.stored, fresh.verified), (1, 1));
    assert_eq!(state(&field, id).await.0, "verified");
}

#[tokio::test]
async fn relay_commands_are_verified_by_the_relay_a_later_reading_shows() {
    let field = Field::new("acme", "dtu-1", b"REG-0001", &["modbus_rtu"]).await;
    let meter = field.meter(0, "dtsy1352", "1", "1001").await;
    let trip = enqueue(&field, meter, Op::Trip, Some(120)).await;
    let sent = claim(&field, trip, meter, "a", Duration::seconds(60), Utc::now())
        .await
        .unwrap()
        .sent_at;
    let pool = &field.db.pool;
    let at = |ms| sent + Duration::milliseconds(ms);
    // Still closed: not verified.
    store_batch(pool, &field.schema, &[reading(meter, at(100), Some(true))])
        .await
        .unwrap();
    assert_eq!(state(&field, trip).await.0, "sent");
    store_batch(pool, &field.schema, &[reading(meter, at(200), Some(false))])
        .await
        .unwrap();
    assert_eq!(state(&field, trip).await.0, "verified");
}

#[tokio::test]
async fn a_newer_control_command_cancels_a_queued_opposite_and_old_ones_expire() {
    let field = Field::new("acme", "dtu-1", b"REG-0001", &["modbus_rtu"]).await;
    let meter = field.meter(0, "dtsy1352", "1", "1001").await;
    let trip = enqueue(&field, meter, Op::Trip, Some(120)).await;
    let read = enqueue(&field, meter, Op::ReadNow, Some(1)).await;
    let close = enqueue(&field, meter, Op::Close, Some(120)).await;
    assert_eq!(state(&field, trip).await.0, "cancelled");
    assert_eq!(state(&field, close).await.0, "queued");
    assert_eq!(
        state(&field, read).await.0,
        "queued",
        "not a control command"
    );
    // Past its expiry a command is expired, by the sweep or by a claim that comes too late.
    let later = Utc::now() + Duration::seconds(5);
    assert_eq!(
        claim(&field, read, meter, "a", Duration::seconds(60), later).await,
        Err(NotClaimed::Expired)
    );
    let mut tx = db::begin_in(&field.db.pool, &field.schema).await.unwrap();
    assert_eq!(
        commands::expire_due(&mut tx, later + Duration::seconds(200))
            .await
            .unwrap(),
        1,
        "the close"
    );
    tx.commit().await.unwrap();
    assert_eq!(state(&field, close).await.0, "expired");
    // Purchases never expire.
    let mut tx = db::begin_in(&field.db.pool, &field.schema).await.unwrap();
    let refused = commands::enqueue(
        &mut tx,
        &field.schema,
        &NewCommand {
            meter_id: meter,
            op: Op::Purchase,
            source: "rule:test".into(),
            detail: String::new(),
            expires_at: Some(Utc::now()),
            batch_id: None,
            retry_of: None,
        },
        Utc::now(),
    )
    .await;
    assert!(refused.is_err());
}

#[tokio::test]
async fn an_unanswered_command_waits_with_its_sender_for_the_next_send_and_no_one_else_takes_it() {
    let field = Field::new("acme", "dtu-1", b"REG-0001", &["modbus_rtu"]).await;
    let meter = field.meter(0, "dtsy1352", "1", "1001").await;
    let id = enqueue(&field, meter, Op::Trip, Some(600)).await;
    let t0 = Utc::now();
    let lease = Duration::seconds(60);
    let retry_later =
        |holder: &'static str, at: chrono::DateTime<Utc>, now: chrono::DateTime<Utc>| {
            let field = &field;
            async move {
                let mut tx = db::begin_in(&field.db.pool, &field.schema).await.unwrap();
                let held = commands::retry_later(&mut tx, id, holder, at, lease, "no answer", now)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                held
            }
        };
    let mut sends = 0;
    let mut now = t0;
    // Every unanswered send waits longer; the sender keeps the command `sent` meanwhile.
    while let Some(wait_s) = commands::retry_backoff_s(sends + 1).filter(|_| sends < 10) {
        let claimed = claim(&field, id, meter, "bus-a", lease, now).await.unwrap();
        sends = claimed.attempts;
        let at = now + Duration::seconds(wait_s);
        assert!(
            !retry_later("bus-b", at, now).await,
            "only its holder keeps it"
        );
        assert!(retry_later("bus-a", at, now).await);
        assert_eq!(state(&field, id).await, ("sent".into(), sends));
        // Before its time it is not sent again, and another bus does not take it.
        assert_eq!(
            claim(&field, id, meter, "bus-a", lease, at - Duration::seconds(1)).await,
            Err(NotClaimed::Gone)
        );
        assert_eq!(
            claim(&field, id, meter, "bus-b", lease, at).await,
            Err(NotClaimed::Gone)
        );
        let mut tx = db::begin_in(&field.db.pool, &field.schema).await.unwrap();
        assert_eq!(
            commands::recover(&mut tx, &[meter], at).await.unwrap(),
            0,
            "the lease covers the wait"
        );
        tx.commit().await.unwrap();
        now = at;
    }
    assert_eq!(sends, commands::CONTROL_SENDS_MAX - 1, "5 s, 15 s, 45 s");
    // The last send: nothing is left to wait for, the bus settles it failed.
    let last = claim(&field, id, meter, "bus-a", lease, now).await.unwrap();
    assert_eq!(last.attempts, commands::CONTROL_SENDS_MAX);
    assert_eq!(commands::retry_backoff_s(last.attempts), None);
    assert_eq!(
        settle(&field, id, State::Failed).await,
        Settled::Moved(State::Sent)
    );

    // A newer opposite command ends one waiting for its retry: it would otherwise follow it.
    let trip = enqueue(&field, meter, Op::Trip, Some(600)).await;
    let t1 = Utc::now();
    claim(&field, trip, meter, "bus-a", lease, t1)
        .await
        .unwrap();
    let mut tx = db::begin_in(&field.db.pool, &field.schema).await.unwrap();
    assert!(commands::retry_later(
        &mut tx,
        trip,
        "bus-a",
        t1 + Duration::seconds(5),
        lease,
        "no answer",
        t1
    )
    .await
    .unwrap());
    tx.commit().await.unwrap();
    enqueue(&field, meter, Op::Close, Some(600)).await;
    assert_eq!(state(&field, trip).await.0, "failed");
    assert_eq!(
        claim(
            &field,
            trip,
            meter,
            "bus-a",
            lease,
            t1 + Duration::seconds(6)
        )
        .await,
        Err(NotClaimed::Gone)
    );
    // One whose expiry comes during the wait expires instead of being sent again.
    let read = enqueue(&field, meter, Op::ReadNow, Some(10)).await;
    let t2 = Utc::now();
    claim(&field, read, meter, "bus-a", lease, t2)
        .await
        .unwrap();
    let mut tx = db::begin_in(&field.db.pool, &field.schema).await.unwrap();
    assert!(
        !commands::retry_later(
            &mut tx,
            read,
            "bus-a",
            t2 + Duration::seconds(30),
            lease,
            "no answer",
            t2
        )
        .await
        .unwrap(),
        "no retry past the expiry"
    );
}

/// An op no driver of the meter carries is refused when it is asked for, with the reason, and
/// nothing is queued; what its route does carry goes in.
#[tokio::test]
async fn an_op_the_meters_route_cannot_carry_is_refused_when_asked_for() {
    let field = Field::new("acme", "dtu-1", b"REG-0001", &["modbus_rtu", "dlt645"]).await;
    let acrel = field.meter(0, "dtsy1352", "1", "1001").await;
    let dlt = field.meter(1, "dlt645", "202611250010", "1002").await;
    let ask = |meter_id: Uuid, op: Op| {
        let field = &field;
        async move {
            let mut tx = db::begin_in(&field.db.pool, &field.schema).await.unwrap();
            let asked = commands::enqueue(
                &mut tx,
                &field.schema,
                &NewCommand {
                    meter_id,
                    op,
                    source: "rule:test".into(),
                    detail: String::new(),
                    expires_at: Some(Utc::now() + Duration::seconds(60)),
                    batch_id: None,
                    retry_of: None,
                },
                Utc::now(),
            )
            .await;
            tx.commit().await.unwrap();
            asked.map(|c| c.op).map_err(|e| e.to_string())
        }
    };
    for op in [Op::SetPrepaidParams, Op::SetTouTable, Op::SyncClock] {
        let refused = ask(acrel, op).await.unwrap_err();
        assert!(
            refused.contains("dtsy1352") && refused.contains(op.as_str()),
            "{refused}"
        );
    }
    assert_eq!(
        ask(dlt, Op::SetPrepaidParams).await.unwrap_err(),
        "set_prepaid_params cannot reach this meter: its driver (dlt645) does not carry it"
    );
    assert_eq!(ask(dlt, Op::SyncClock).await, Ok(Op::SyncClock));
    assert_eq!(ask(acrel, Op::Trip).await, Ok(Op::Trip));
    let queued: Vec<String> = sqlx::query_scalar(&format!(
        "select op from {}.commands order by created_at",
        field.schema.as_str()
    ))
    .fetch_all(&field.db.pool)
    .await
    .unwrap();
    assert_eq!(queued, ["sync_clock", "trip"], "nothing else was queued");
}
