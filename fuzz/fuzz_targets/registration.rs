#![no_main]
//! Fuzz target: see `powertab_ingest::fuzzing::registration`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| powertab_ingest::fuzzing::registration(data));
