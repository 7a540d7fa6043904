//! Streaming materialization: events → minute rollups → hour → day → month,
//! plus session windows.
//!
//! In: events the ingest path hands over through [`record`] (and, after a
//! restart, the raw events after the checkpoint). Out: one document per (spec,
//! level, bucket, dimension tuple, writer) in `metrics_minutely` …
//! `metrics_monthly`, session rollups in `sessions`, and a checkpoint in
//! `checkpoints`.
//!
//! Pure parts: [`level`] (UTC buckets), [`spec`], [`sketch`], [`aggregate`],
//! [`windows`], [`sessions`]. Drivers: [`record`] (admit → write → settle, the
//! one way live events are counted), [`engine`] (timer and writes),
//! [`recover`] (restart), [`backfill`] (recompute a range).

pub mod aggregate;
pub mod backfill;
pub mod bson_writer;
pub mod engine;
pub mod error;
pub mod ids;
pub mod level;
pub mod record;
pub mod recover;
pub mod sessions;
pub mod sketch;
pub mod spec;
pub mod store;
pub mod tuples;
pub mod windows;

use serde::{Deserialize, Serialize};

pub use engine::Rollups;
pub use error::{RollupConfigError, RollupError, SketchError};
pub use level::Level;
pub use spec::{Spec, SpecConfig};
pub use store::LevelTtl;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RollupConfig {
    /// `[[rollups.specs]]`; the default spec when absent.
    pub specs: Vec<SpecConfig>,
    /// How late (in event time, behind the newest event) an event may arrive.
    pub allowed_lateness_secs: f64,
    /// When no events arrive, windows still close this long after the lateness.
    pub idle_finalize_secs: f64,
    /// How often changed windows are written (partial minutes for live panels).
    pub flush_interval_ms: u64,
    /// Most distinct (spec, dimension values) tuples held in memory at once,
    /// over the open minute, hour, day and month windows (a tuple stays open
    /// until its month is final). Past it, an event that would open a new
    /// tuple is refused with 429 (not stored, not counted); events of open
    /// tuples are still accepted.
    pub max_open_tuples: usize,
    /// Retention per level.
    pub ttl: LevelTtl,
    pub sessions: SessionConfig,
}

impl Default for RollupConfig {
    fn default() -> Self {
        RollupConfig {
            specs: vec![SpecConfig::default()],
            allowed_lateness_secs: 120.0,
            idle_finalize_secs: 60.0,
            flush_interval_ms: 250,
            max_open_tuples: 100_000,
            ttl: LevelTtl::default(),
            sessions: SessionConfig::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    pub enabled: bool,
    /// The spec whose event types and dimensions sessions use.
    pub spec: String,
    /// A session ends after this long without events.
    pub gap_secs: f64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            enabled: true,
            spec: "default".into(),
            gap_secs: 1800.0,
        }
    }
}

impl RollupConfig {
    pub fn validate(&self) -> Result<Vec<Spec>, RollupConfigError> {
        let specs = spec::check_specs(&self.specs)?;
        for (name, v) in [
            ("rollups.allowed_lateness_secs", self.allowed_lateness_secs),
            ("rollups.idle_finalize_secs", self.idle_finalize_secs),
            ("rollups.sessions.gap_secs", self.sessions.gap_secs),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(RollupConfigError::BadSeconds {
                    setting: name,
                    got: v,
                });
            }
        }
        if self.flush_interval_ms == 0 || self.flush_interval_ms > 60_000 {
            return Err(RollupConfigError::BadFlushInterval);
        }
        if self.max_open_tuples == 0 {
            return Err(RollupConfigError::NoOpenTuples);
        }
        recover::session_spec_index(self, &specs)?;
        Ok(specs)
    }
}
