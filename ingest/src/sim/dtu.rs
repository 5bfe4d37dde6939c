//! A simulated DTU: one TCP connection per serial port to ingest's DTU port, the registration
//! packet first, heartbeats now and then, and behind it an RS485 bus of simulated meters that
//! answer after the wire time of request and reply at the bus's baud rate plus the meter's
//! turnaround. Faults (silent meters, CRC garbage, heartbeats inside replies, slow replies,
//! disconnects) are switched on by [`DtuFaults`].

use super::meter::SimMeter;
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// The meter's think time before it answers.
pub const TURNAROUND_MS: u64 = 10;

/// Faults a simulated DTU injects.
#[derive(Debug, Clone, Default)]
pub struct DtuFaults {
    /// Every n-th reply has a flipped byte (CRC/checksum garbage).
    pub garbage_every: Option<u32>,
    /// The heartbeat is sent in the middle of every reply.
    pub heartbeat_inside_reply: bool,
    /// Extra delay before each reply.
    pub slow_reply_ms: u64,
    /// The connection drops after this long.
    pub disconnect_after: Option<Duration>,
}

/// The meters on one serial port and how it is wired.
#[derive(Debug)]
pub struct SimBus {
    pub meters: Vec<SimMeter>,
    pub baud: u32,
    /// Bits per character: start + 8 data + parity + stop.
    pub bits_per_char: u32,
    /// `true` for DL/T 645 buses (frames 68…16), `false` for Modbus RTU.
    pub dlt645: bool,
}

impl SimBus {
    pub fn modbus(meters: Vec<SimMeter>) -> SimBus {
        SimBus {
            meters,
            baud: 9600,
            bits_per_char: 10,
            dlt645: false,
        }
    }

    pub fn dlt645(meters: Vec<SimMeter>) -> SimBus {
        SimBus {
            meters,
            baud: 2400,
            bits_per_char: 11,
            dlt645: true,
        }
    }

    /// How long `bytes` take on the wire.
    pub fn wire_time(&self, bytes: usize) -> Duration {
        Duration::from_micros(
            bytes as u64 * u64::from(self.bits_per_char) * 1_000_000 / u64::from(self.baud.max(1)),
        )
    }

    /// The first complete request in `buf` and its length.
    fn take_request(&self, buf: &[u8]) -> Option<(Vec<u8>, usize)> {
        if self.dlt645 {
            let start = buf.iter().position(|&b| b == 0x68)?;
            let f = &buf[start..];
            let len = 12 + usize::from(*f.get(9)?);
            (f.len() >= len).then(|| (f[..len].to_vec(), start + len))
        } else {
            let len = match buf.get(1)? {
                0x10 => 9 + usize::from(*buf.get(6)?),
                _ => 8,
            };
            (buf.len() >= len).then(|| (buf[..len].to_vec(), len))
        }
    }
}

/// A DTU with one serial port.
pub struct SimDtu {
    pub registration: Vec<u8>,
    pub heartbeat: Vec<u8>,
    pub heartbeat_every: Duration,
    pub bus: Arc<Mutex<SimBus>>,
    pub faults: DtuFaults,
}

impl SimDtu {
    /// Connects to ingest at `addr` and serves requests until the connection ends (or a
    /// `disconnect_after` fault ends it). Returns the number of requests answered.
    pub async fn run(&self, addr: std::net::SocketAddr) -> std::io::Result<u64> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        stream.write_all(&self.registration).await?;
        let started = tokio::time::Instant::now();
        let mut heartbeat = tokio::time::interval(self.heartbeat_every);
        heartbeat.tick().await;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        let mut answered = 0u64;
        loop {
            if let Some(limit) = self.faults.disconnect_after {
                if started.elapsed() >= limit {
                    return Ok(answered);
                }
            }
            tokio::select! {
                read = stream.read(&mut chunk) => {
                    let n = read?;
                    if n == 0 {
                        return Ok(answered);
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                _ = heartbeat.tick() => {
                    if !self.heartbeat.is_empty() {
                        stream.write_all(&self.heartbeat).await?;
                    }
                    continue;
                }
                _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
            }
            loop {
                let (request, used, reply, delay) = {
                    let mut bus = self.bus.lock().await;
                    let Some((request, used)) = bus.take_request(&buf) else {
                        break;
                    };
                    let now = Utc::now();
                    let reply = bus.meters.iter_mut().find_map(|m| m.answer(&request, now));
                    let delay = bus.wire_time(request.len() + reply.as_ref().map_or(0, Vec::len));
                    (request, used, reply, delay)
                };
                let _ = request;
                buf.drain(..used);
                let Some(mut reply) = reply else { continue };
                answered += 1;
                tokio::time::sleep(
                    delay + Duration::from_millis(TURNAROUND_MS + self.faults.slow_reply_ms),
                )
                .await;
                if let Some(n) = self.faults.garbage_every {
                    if n > 0 && answered % u64::from(n) == 0 {
                        let middle = reply.len() / 2;
                        reply[middle] ^= 0x5A;
                    }
                }
                if self.faults.heartbeat_inside_reply && !self.heartbeat.is_empty() {
                    let middle = reply.len() / 2;
                    stream.write_all(&reply[..middle]).await?;
                    stream.write_all(&self.heartbeat).await?;
                    stream.write_all(&reply[middle..]).await?;
                } else {
                    stream.write_all(&reply).await?;
                }
            }
        }
    }
}
