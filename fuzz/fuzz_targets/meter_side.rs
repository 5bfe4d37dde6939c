#![no_main]
//! Fuzz target: see `powertab_ingest::fuzzing::meter_side`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| powertab_ingest::fuzzing::meter_side(data));
