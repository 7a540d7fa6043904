//! Shared by the black-box tests; each test binary uses a part of it.
#![allow(dead_code)]

pub mod brokers;
pub mod capture;
pub mod daemon;
pub mod frames;
pub mod late_insert_proxy;
pub mod load;
pub mod mongo;
pub mod plugin_harness;
pub mod procstat;
pub mod prom;
pub mod recount;
pub mod report;
pub mod zip;

/// The bound on every wait for a condition (see `mongo::PATIENCE`).
pub use mongo::PATIENCE;

/// Waits until `check` holds, asking every 100 ms; panics with `what` only when
/// [`PATIENCE`] runs out (a hang, not a slow machine).
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
