//! Fuzz target `variable_query`: see `mongopulse_fuzz::variable_query` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mongopulse_fuzz::variable_query(data));
