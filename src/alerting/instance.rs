//! One alert instance (a rule and one group of its labels) as the scheduler keeps it,
//! the store restores it and the API shows it.
//!
//! In: a rule's id and name, the group's labels, the state machine's [`Phase`]. Out:
//! [`InstanceState`] (JSON for the API) and the instance's key (`country=FR`, or `all`).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::evaluate::Labels;
use super::state::Phase;

/// One instance's current state, as the API shows it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceState {
    pub rule_id: String,
    pub rule_name: String,
    pub instance: String,
    pub labels: Labels,
    pub state: &'static str,
    pub since: Option<DateTime<Utc>>,
    pub value: Option<f64>,
    pub evaluated_at: DateTime<Utc>,
    #[serde(skip)]
    pub(crate) phase: Phase,
}

impl InstanceState {
    /// Sets the phase and the fields the API derives from it, so they cannot disagree.
    pub(crate) fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
        self.state = phase_name(phase);
        self.since = match phase {
            Phase::Pending { since } | Phase::Firing { since, .. } => Some(date(since)),
            Phase::Normal => None,
        };
    }
}

pub(crate) fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Normal => "normal",
        Phase::Pending { .. } => "pending",
        Phase::Firing { .. } => "firing",
    }
}

/// `k=v,k2=v2` in label order, `all` for a rule without group-by.
pub(crate) fn instance_key(labels: &Labels) -> String {
    if labels.is_empty() {
        return "all".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Epoch milliseconds as a date; out-of-range values (never produced by the scheduler)
/// become the epoch rather than a panic.
pub(crate) fn date(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}
