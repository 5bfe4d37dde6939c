#![no_main]
//! Fuzz target: see `powertab_ingest::fuzzing::framing`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| powertab_ingest::fuzzing::framing(data));
