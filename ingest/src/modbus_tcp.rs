//! Modbus-TCP gateways, dialled out (DESIGN.md: Ingest): every enabled `modbus_tcp` gateway's
//! bus is a TCP connection to (host, the bus's port), unit id = the meter's bus address, spoken
//! with tokio-modbus. tokio-modbus has no call timeout of its own, so every call is wrapped; a
//! timed-out connection may still deliver the late answer, so it is dropped and dialled afresh.
//! Connections that fail are retried with a backoff capped at [`BACKOFF_MAX`]. A supervisor
//! re-reads the gateway list every [`RESCAN`] and starts, stops or re-dials buses to match.
//! Every dial's resolved address goes through the [`DialPolicy`] first: a tenant's host must
//! not make the platform dial its own or internal addresses. A failed dial is one log line; the
//! gateway shows offline, with nothing of why.

use crate::bus::{self, Transport};
use crate::commands::Dispatch;
use crate::dial_policy::DialPolicy;
use crate::driver::{ModbusOp, Step};
use crate::framing::{rtu, Reply};
use crate::writer::Writer;
use powertab_core::kernel::names::SchemaName;
use sqlx::{PgPool, Row};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_modbus::client::{tcp, Context, Reader, Writer as _};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::Slave;
use uuid::Uuid;

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait between connection attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How often the supervisor re-reads the gateway list.
pub const RESCAN: Duration = Duration::from_secs(30);

/// One bus to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    schema: SchemaName,
    gateway_id: Uuid,
    bus_id: Uuid,
    number: i32,
    host: String,
    port: u16,
}

async fn load_targets(pool: &PgPool) -> anyhow::Result<Vec<Target>> {
    let companies: Vec<i64> = sqlx::query_scalar(
        "select distinct company_id from control.gateway_directory where kind = 'modbus_tcp' and status = 'enabled'",
    )
    .fetch_all(pool)
    .await?;
    let mut targets = Vec::new();
    for company_id in companies {
        let schema = SchemaName::for_company(company_id);
        let mut tx = powertab_core::db::begin_in(pool, &schema).await?;
        let rows = sqlx::query(
            "select g.id as gateway_id, g.host, b.id as bus_id, b.number, b.tcp_port
             from gateways g join buses b on b.gateway_id = g.id
             where g.kind = 'modbus_tcp' and g.status = 'enabled' and b.removed_at is null and b.tcp_port is not null",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        for r in rows {
            targets.push(Target {
                schema: schema.clone(),
                gateway_id: r.try_get("gateway_id")?,
                bus_id: r.try_get("bus_id")?,
                number: r.try_get("number")?,
                host: r.try_get::<Option<String>, _>("host")?.unwrap_or_default(),
                port: u16::try_from(r.try_get::<i32, _>("tcp_port")?).unwrap_or(502),
            });
        }
    }
    Ok(targets)
}

/// Keeps one session per enabled Modbus-TCP bus until the task is dropped.
pub async fn serve(
    pool: PgPool,
    writer: Writer,
    interval: Duration,
    dispatch: Dispatch,
    policy: DialPolicy,
) {
    let mut running: HashMap<Uuid, (Target, tokio::task::JoinHandle<()>)> = HashMap::new();
    loop {
        match load_targets(&pool).await {
            Ok(targets) => {
                // Gone, changed (host, port) or crashed: stop it (a changed one restarts below).
                running.retain(|_, (old, task)| {
                    let keep = targets.contains(old) && !task.is_finished();
                    if !keep {
                        task.abort();
                    }
                    keep
                });
                for target in targets {
                    if running.contains_key(&target.bus_id) {
                        continue;
                    }
                    let task = tokio::spawn(dial_forever(
                        target.clone(),
                        pool.clone(),
                        writer.clone(),
                        interval,
                        dispatch.clone(),
                        policy.clone(),
                    ));
                    running.insert(target.bus_id, (target, task));
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the Modbus-TCP gateways failed"),
        }
        tokio::time::sleep(RESCAN).await;
    }
}

async fn connect(addr: &str, policy: &DialPolicy) -> std::io::Result<(Context, SocketAddr)> {
    let mut last = std::io::Error::other(format!("{addr} resolves to nothing"));
    let resolved = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host(addr))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "name lookup timed out")
        })??;
    for socket in resolved {
        if !policy.allows(socket.ip()) {
            metrics::counter!("ingest_modbus_tcp_dials_refused_total").increment(1);
            last = std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "the address is not one the platform dials (ingest.dial_allow)",
            );
            continue;
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(socket)).await {
            Ok(Ok(stream)) => {
                stream.set_nodelay(true)?;
                return Ok((tcp::attach_slave(stream, Slave(1)), socket));
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
        }
    }
    Err(last)
}

/// Dials one bus again and again: a session while connected, capped backoff in between.
async fn dial_forever(
    target: Target,
    pool: PgPool,
    writer: Writer,
    interval: Duration,
    dispatch: Dispatch,
    policy: DialPolicy,
) {
    let addr = format!("{}:{}", target.host, target.port);
    let mut backoff = Duration::from_secs(1);
    loop {
        let outcome = async {
            let (context, socket) = connect(&addr, &policy).await?;
            let link = bus::load_link(&pool, &target.schema, target.gateway_id, target.number)
                .await?
                .ok_or_else(|| anyhow::anyhow!("the bus is gone"))?;
            tracing::info!(%addr, "Modbus-TCP gateway connected");
            let transport = ModbusTcp {
                context: Some(context),
                addr: addr.clone(),
                policy: policy.clone(),
                activity: false,
            };
            let started = Instant::now();
            let result = bus::run(
                transport,
                socket.to_string(),
                link,
                pool.clone(),
                writer.clone(),
                interval,
                dispatch.clone(),
            )
            .await;
            anyhow::Ok((result, started.elapsed()))
        }
        .await;
        bus::mark_offline(&pool, &target.schema, target.gateway_id, target.number).await;
        match outcome {
            // A session that ran a while was healthy: start the backoff afresh.
            Ok((_, lasted)) if lasted > BACKOFF_MAX => backoff = Duration::from_secs(1),
            Ok((result, _)) => tracing::info!(%addr, ?result, "Modbus-TCP session ended"),
            Err(e) => tracing::info!(%addr, error = %e, "Modbus-TCP gateway unreachable"),
        }
        metrics::counter!("ingest_modbus_tcp_reconnects_total").increment(1);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A connection to one Modbus-TCP bus.
pub struct ModbusTcp {
    context: Option<Context>,
    /// Checked again at every re-dial: the name may resolve elsewhere by then.
    policy: DialPolicy,
    addr: String,
    activity: bool,
}

impl ModbusTcp {
    /// Registers as big-endian bytes: what arrived, for the raw column.
    fn raw(values: &[u16]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_be_bytes()).collect()
    }
}

impl Transport for ModbusTcp {
    fn take_activity(&mut self) -> bool {
        std::mem::take(&mut self.activity)
    }

    async fn idle(&mut self, until: Instant) -> std::io::Result<()> {
        // A Modbus-TCP gateway says nothing unasked.
        tokio::time::sleep_until(until).await;
        Ok(())
    }

    async fn transact(
        &mut self,
        step: &Step,
        timeout: Duration,
    ) -> std::io::Result<Option<(Reply, Vec<u8>)>> {
        let Some(op) = &step.modbus else {
            // Validation keeps DL/T 645 off Modbus-TCP gateways; nothing to send.
            return Ok(None);
        };
        if self.context.is_none() {
            self.context = Some(connect(&self.addr, &self.policy).await?.0);
        }
        let context = self.context.as_mut().expect("connected above");
        let answer = match op {
            ModbusOp::ReadHolding { unit, start, count } => {
                context.set_slave(Slave(*unit));
                tokio::time::timeout(timeout, context.read_holding_registers(*start, *count))
                    .await
                    .map(|r| {
                        r.map(|r| r.map(|v| (rtu::Reply::Registers(v.clone()), Self::raw(&v))))
                    })
            }
            ModbusOp::WriteMultiple {
                unit,
                start,
                values,
            } => {
                context.set_slave(Slave(*unit));
                tokio::time::timeout(timeout, context.write_multiple_registers(*start, values))
                    .await
                    .map(|r| r.map(|r| r.map(|()| (rtu::Reply::Written, Vec::new()))))
            }
        };
        match answer {
            // No answer in time: the late one may still come, so this connection is done.
            Err(_) => {
                self.context = None;
                Ok(None)
            }
            Ok(Ok(Ok((reply, raw)))) => {
                self.activity = true;
                Ok(Some((Reply::Rtu(reply), raw)))
            }
            Ok(Ok(Err(exception))) => {
                self.activity = true;
                Ok(Some((
                    Reply::Rtu(rtu::Reply::Exception(u8::from(exception))),
                    Vec::new(),
                )))
            }
            Ok(Err(tokio_modbus::Error::Transport(e))) => {
                self.context = None;
                Err(e)
            }
            // A protocol error (a mismatched transaction, a malformed answer): no answer, and a
            // fresh connection for the next request.
            Ok(Err(e)) => {
                tracing::debug!(addr = %self.addr, error = %e, "Modbus-TCP protocol error");
                self.context = None;
                Ok(None)
            }
        }
    }
}
