//! Fuzz target `http_body`: where a plain-HTTP request body and the target's response
//! end. The checks live in `proto/tests/harness`, shared with `proto/tests/corpus.rs`,
//! which replays `fuzz/corpus/http_body/` under `cargo test`.
#![no_main]

#[path = "../../proto/tests/harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::http_body(data));
