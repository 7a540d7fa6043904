//! Fuzz target `query_model`: see `mongopulse_fuzz::query_model` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mongopulse_fuzz::query_model(data));
