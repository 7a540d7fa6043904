//! The path the daemon names the alert engine by. The engine's jobs live apart:
//! [`scheduler`](super::scheduler) (evaluation loop, rule reload),
//! [`store`](super::store) (restore and record in `alerts`),
//! [`template`](super::template) (what a notification says), [`api`](super::api) (views),
//! [`config`](super::config) (the `[alerting]` section).
//!
//! In: nothing of its own. Out: the same names as before the split.

pub use super::config::AlertingConfig;
pub use super::instance::InstanceState;
pub use super::scheduler::{AlertEngine, SetupError};
