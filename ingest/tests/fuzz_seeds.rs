//! The fuzz targets' bodies over their seed corpora (`fuzz/corpus/<target>/`), as ordinary
//! tests: what cargo-fuzz explores for hours, CI checks on the seeds every run.

use std::path::Path;

fn run_corpus(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        body(&std::fs::read(&path).unwrap());
        seeds += 1;
    }
    assert!(seeds >= 3, "{target} has {seeds} seeds");
}

#[test]
fn framing_seeds() {
    run_corpus("framing", powertab_ingest::fuzzing::framing);
}

#[test]
fn registration_seeds() {
    run_corpus("registration", powertab_ingest::fuzzing::registration);
}

#[test]
fn meter_side_seeds() {
    run_corpus("meter_side", powertab_ingest::fuzzing::meter_side);
}

#[test]
fn mqtt_payload_seeds() {
    run_corpus("mqtt_payload", powertab_ingest::fuzzing::mqtt_payload);
}
