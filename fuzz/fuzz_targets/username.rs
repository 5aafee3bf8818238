//! Fuzz target `username`: the checks live in `proto/tests/harness`, shared with
//! `proto/tests/corpus.rs`, which replays `fuzz/corpus/username/` under `cargo test`.
#![no_main]

#[path = "../../proto/tests/harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::username(data));
