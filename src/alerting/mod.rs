//! Alerting: the seed's real-time rules, evaluated at every minute the
//! rollups finalise, with a state machine per instance and real notifiers.
//!
//! In: rules (a provisioning file and `alert_rules`) and the rollups. Out:
//! transitions in `alerts` with their notification log, notifications
//! (webhook, Slack, email, Grafana Alertmanager), and a JSON API.
//! Pure parts: [`rules`] (shape and checks), [`condition`], [`state`],
//! [`template`]. Drivers: [`evaluate`] (reads measures), [`scheduler`] (the
//! evaluation loop), [`store`] (`alerts` and `alert_rules`), [`api`];
//! [`config`] is the `[alerting]` section.

pub mod api;
pub mod condition;
pub mod config;
pub mod evaluate;
pub mod instance;
pub mod notify;
pub mod rules;
pub mod scheduler;
pub mod state;
pub mod store;
pub(crate) mod template;

pub use config::AlertingConfig;
pub use scheduler::{AlertEngine, SetupError};
