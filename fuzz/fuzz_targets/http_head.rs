//! Fuzz target `http_head`: the checks live in `proto/tests/harness`, shared with
//! `proto/tests/corpus.rs`, which replays `fuzz/corpus/http_head/` under `cargo test`.
#![no_main]

#[path = "../../proto/tests/harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::http_head(data));
