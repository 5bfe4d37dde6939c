//! PowerTab's field side (DESIGN.md: Ingest): gateway sessions, framers, meter drivers, the poll
//! scheduler, command delivery and the simulator. It meets the server only in the database.
//!
//! The foundation issue only reserves this crate and its place in the dependency graph
//! (core ← ingest ← server); the meter-acquisition issue fills it.
