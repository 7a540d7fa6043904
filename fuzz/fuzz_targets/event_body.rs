//! Fuzz target `event_body`: see `mongopulse_fuzz::event_body` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mongopulse_fuzz::event_body(data));
