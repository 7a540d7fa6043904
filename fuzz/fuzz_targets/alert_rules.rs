//! Fuzz target `alert_rules`: see `mongopulse_fuzz::alert_rules` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mongopulse_fuzz::alert_rules(data));
