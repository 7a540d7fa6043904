//! The `[alerting]` section of the daemon's configuration.
//!
//! In: the daemon's TOML and environment (through `daemon::config`). Out: what the
//! scheduler, the notifiers and the notifications' links are set up with.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::notify::{NotifierConfig, RetryConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertingConfig {
    /// Evaluate rules in this daemon. With several daemons on one database,
    /// enable it on one only, or every alert is notified once per daemon.
    pub enabled: bool,
    /// A YAML or TOML file with `rules: [...]`, loaded at start and every minute.
    pub rules_file: Option<PathBuf>,
    pub notifiers: Vec<NotifierConfig>,
    pub retry: RetryConfig,
    /// Links in notifications point here (`<base>/v1/alerts/history?rule=<id>`).
    pub public_url: String,
    /// Bound on each evaluation query.
    pub query_timeout_secs: f64,
    /// After a pause, at most this many missed minutes are evaluated.
    pub max_catch_up_minutes: u32,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            enabled: true,
            rules_file: None,
            notifiers: Vec::new(),
            retry: RetryConfig::default(),
            public_url: "http://localhost:8428".into(),
            query_timeout_secs: 10.0,
            max_catch_up_minutes: 60,
        }
    }
}
