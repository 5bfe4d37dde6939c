//! The PowerTab secure command, version 1 (SECURE-COMMAND.md): credit and control commands only
//! the intended meter accepts, exactly once. [`primitives`] holds 3DES-EDE2, PBOC-style key
//! diversification, ISO/IEC 9797-1 padding method 2 and the retail MAC — the only code the
//! simulated meter shares with the platform. [`frame`] derives a meter's keys, builds command
//! frames and checks acknowledgements; frames are built here, in the server process, and ingest
//! carries their bytes only (DESIGN.md). [`keys`] keeps each company's master keys (sealed at
//! rest, versioned) and which version each meter holds; [`commands`] puts secure frames into the
//! command queue on the meter's counters.

pub mod cancel;
pub mod closing;
pub mod commands;
pub mod deduct;
pub mod frame;
pub mod keys;
pub mod primitives;
pub mod readback;
pub mod rekey;
pub mod reports;
pub mod settle;

pub use frame::{
    build, verify_ack, Ack, AckError, AckStatus, MeterKeys, MeterNumber, Order, SecureOp,
};
