//! One JSON row per reliability scenario, for `scripts/reliability.sh`'s table: written to
//! `$MONGOPULSE_RELIABILITY_OUT/<scenario>-<backend>.json` when that variable is set.
//!
//! In: what a scenario tried and measured. Out: the file (nothing when the variable is
//! unset). The fields are the table's columns; other suites (fuzzing, hostile input) may
//! write rows of the same shape into the same folder.

use serde::Serialize;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Row {
    pub scenario: String,
    pub backend: String,
    /// What was done, in words ("kill -9 of the daemon", "database paused (SIGSTOP)").
    pub tried: String,
    /// How many times, or how many seconds (see `tried_unit`).
    pub tried_count: f64,
    pub tried_unit: String,
    pub events_acknowledged: u64,
    /// Acknowledged (2xx) but not in `events`.
    pub lost: u64,
    /// Stored more than once in `events`.
    pub double_counted_events: u64,
    /// Counted more (or fewer) times than stored, summed over every rollup level.
    pub double_counted_rollups: u64,
    pub lost_rollups: u64,
    /// Answers that were neither 2xx, nor 503 with Retry-After, nor no answer at all.
    pub wrong_answers: u64,
    pub answered_503: u64,
    pub panics: u64,
    pub seed: Option<u64>,
    pub duration_secs: f64,
    pub events_per_sec: f64,
    pub daemon_rss_slope_kib_per_min: Option<f64>,
    pub plugin_rss_slope_kib_per_min: Option<f64>,
    pub daemon_rss_max_kib: Option<u64>,
    pub daemon_rss_before_kib: Option<u64>,
    pub fd_start: Option<usize>,
    pub fd_end: Option<usize>,
    pub threads_start: Option<usize>,
    pub threads_end: Option<usize>,
    pub p99_start_ms: Option<f64>,
    pub p99_end_ms: Option<f64>,
    /// Anything else worth a line under the table.
    pub notes: Vec<String>,
}

impl Row {
    /// Prints the row on stderr (visible with `--nocapture`) and writes it to the output
    /// folder when `MONGOPULSE_RELIABILITY_OUT` is set.
    pub fn write(&self) {
        let json = serde_json::to_string_pretty(self).expect("a row is JSON");
        eprintln!("reliability row: {json}");
        let Some(dir) = std::env::var_os("MONGOPULSE_RELIABILITY_OUT").filter(|d| !d.is_empty())
        else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let path = dir.join(format!("{}-{}.json", self.scenario, self.backend));
        std::fs::write(&path, json)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}
