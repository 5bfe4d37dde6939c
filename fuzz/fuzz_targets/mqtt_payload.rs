#![no_main]
//! Fuzz target: see `powertab_ingest::fuzzing::mqtt_payload`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| powertab_ingest::fuzzing::mqtt_payload(data));
