//! Shared by the black-box tests; each test binary uses a part of it.
#![allow(dead_code)]

pub mod capture;
pub mod daemon;
pub mod frames;
pub mod load;
pub mod mongo;
pub mod plugin_harness;
pub mod procstat;
pub mod recount;
pub mod report;
pub mod zip;

/// The bound on every wait for a condition (see `mongo::PATIENCE`).
pub use mongo::PATIENCE;
