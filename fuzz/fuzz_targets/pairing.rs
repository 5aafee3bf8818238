//! Fuzz target `pairing`: pairing codes and poll answers. The checks live in
//! `proto/tests/harness`, shared with `proto/tests/corpus.rs`, which replays
//! `fuzz/corpus/pairing/` under `cargo test`.
#![no_main]

#[path = "../../proto/tests/harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::pairing(data));
