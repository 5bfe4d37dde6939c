//! A simulated Modbus-TCP gateway: it listens like a real one, turns each MBAP request into an
//! RTU frame for its bus of simulated meters (unit id = meter address), waits the wire time,
//! and answers with the meter's reply, or exception 0x0B (gateway target device failed to
//! respond) when no meter answers.

use super::dtu::{SimBus, TURNAROUND_MS};
use crate::framing::rtu;
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

/// Serves Modbus-TCP on `listener` for `bus` until the task is dropped.
pub async fn serve(listener: TcpListener, bus: Arc<Mutex<SimBus>>) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(connection(stream, bus.clone()));
    }
}

async fn connection(mut stream: TcpStream, bus: Arc<Mutex<SimBus>>) -> std::io::Result<()> {
    loop {
        let mut header = [0u8; 7];
        stream.read_exact(&mut header).await?;
        let length = usize::from(u16::from_be_bytes([header[4], header[5]]));
        if !(2..=254).contains(&length) {
            return Ok(());
        }
        let mut pdu = vec![0u8; length - 1];
        stream.read_exact(&mut pdu).await?;
        let unit = header[6];
        let mut frame = vec![unit];
        frame.extend_from_slice(&pdu);
        let crc = rtu::crc16(&frame);
        frame.extend_from_slice(&crc.to_le_bytes());
        let (answer, delay) = {
            let mut bus = bus.lock().await;
            let now = Utc::now();
            let answer = bus.meters.iter_mut().find_map(|m| m.answer(&frame, now));
            let delay = bus.wire_time(frame.len() + answer.as_ref().map_or(0, Vec::len));
            (answer, delay)
        };
        tokio::time::sleep(delay + Duration::from_millis(TURNAROUND_MS)).await;
        let reply_pdu = match answer {
            // Unit and CRC off: the PDU goes back in MBAP.
            Some(a) if a.len() > 3 => a[1..a.len() - 2].to_vec(),
            _ => vec![pdu.first().copied().unwrap_or(0) | 0x80, 0x0B],
        };
        let mut reply = header[..4].to_vec();
        reply.extend_from_slice(&(u16::try_from(reply_pdu.len() + 1).unwrap_or(0)).to_be_bytes());
        reply.push(unit);
        reply.extend_from_slice(&reply_pdu);
        stream.write_all(&reply).await?;
    }
}
