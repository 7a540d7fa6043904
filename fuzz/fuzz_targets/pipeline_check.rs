//! Fuzz target `pipeline_check`: see `mongopulse_fuzz::pipeline_check` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mongopulse_fuzz::pipeline_check(data));
