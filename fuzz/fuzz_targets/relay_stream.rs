//! Fuzz target `relay_stream` (the node reading a relay stream's header from arbitrary chunks): the checks live in `proto/tests/harness`, shared with
//! `proto/tests/corpus.rs`, which replays `fuzz/corpus/relay_stream/` under `cargo test`.
#![no_main]

#[path = "../../proto/tests/harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::relay_stream(data));
