//! Fuzz target `daemon_config`: see `mongopulse_fuzz::daemon_config` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mongopulse_fuzz::daemon_config(data));
