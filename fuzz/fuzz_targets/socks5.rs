//! Fuzz target `socks5`: the checks live in `proto/tests/harness`, shared with
//! `proto/tests/corpus.rs`, which replays `fuzz/corpus/socks5/` under `cargo test`.
#![no_main]

#[path = "../../proto/tests/harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::socks5(data));
