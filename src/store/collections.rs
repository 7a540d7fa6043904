//! The collections Mongo Pulse reads and writes, with the names users may override.

use serde::{Deserialize, Serialize};

/// The rollup levels, finest first, with the suffix of their collection.
pub const ROLLUP_LEVELS: [&str; 4] = ["minutely", "hourly", "daily", "monthly"];

/// Collection names. Defaults follow DESIGN.md; every one can be renamed in the
/// daemon's config and in the data source's JSON settings, which must agree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectionNames {
    pub events: String,
    pub metrics_minutely: String,
    pub metrics_hourly: String,
    pub metrics_daily: String,
    pub metrics_monthly: String,
    pub sessions: String,
    pub alert_rules: String,
    pub alerts: String,
    pub checkpoints: String,
    pub dead_letters: String,
    pub pipeline_stats: String,
}

impl Default for CollectionNames {
    fn default() -> Self {
        CollectionNames {
            events: "events".into(),
            metrics_minutely: "metrics_minutely".into(),
            metrics_hourly: "metrics_hourly".into(),
            metrics_daily: "metrics_daily".into(),
            metrics_monthly: "metrics_monthly".into(),
            sessions: "sessions".into(),
            alert_rules: "alert_rules".into(),
            alerts: "alerts".into(),
            checkpoints: "checkpoints".into(),
            dead_letters: "dead_letters".into(),
            pipeline_stats: "pipeline_stats".into(),
        }
    }
}

impl CollectionNames {
    /// The rollup collections, finest level first.
    pub fn rollups(&self) -> [&str; 4] {
        [
            &self.metrics_minutely,
            &self.metrics_hourly,
            &self.metrics_daily,
            &self.metrics_monthly,
        ]
    }
}
