//! Alert rules: their shape, validation and loading.
//!
//! In: a provisioning file (YAML or TOML, `rules: [...]`) and the documents
//! of `alert_rules` (same shape). Out: checked [`Rule`]s, or a [`RulesError`]
//! naming the file or the rule and the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::query::model::{parse_shift, Filter, Measure, MeasureKind};

/// A rule as written by people.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique and stable: alert history is kept under it.
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "all_types")]
    pub event_type: String,
    #[serde(default = "default_spec")]
    pub spec: String,
    #[serde(default = "count")]
    pub measure: Measure,
    #[serde(default)]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub group_by: Vec<String>,
    /// The measure is computed over the last `window` (e.g. `5m`).
    #[serde(default = "one_minute")]
    pub window: String,
    pub condition: Condition,
    /// How long the condition must hold before the alert fires (`0m` fires at once).
    #[serde(default = "zero", rename = "for")]
    pub for_: String,
    #[serde(default = "default_severity")]
    pub severity: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Templates: `{{value}}`, `{{threshold}}`, `{{rule}}`, `{{instance}}`, and group-by labels `{{country}}`.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Names of notifiers (configured under `alerting.notifiers`).
    #[serde(default)]
    pub notifiers: Vec<String>,
    /// Remind while firing; `0m` never repeats.
    #[serde(default = "zero")]
    pub repeat_interval: String,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn all_types() -> String {
    "*".into()
}
fn default_spec() -> String {
    "default".into()
}
fn count() -> Measure {
    Measure {
        kind: MeasureKind::Count,
        alias: None,
        window: None,
    }
}
fn one_minute() -> String {
    "1m".into()
}
fn zero() -> String {
    "0m".into()
}
fn default_severity() -> String {
    "warning".into()
}
fn yes() -> bool {
    true
}

/// When an instance is in alert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Condition {
    /// value > threshold
    Above { threshold: f64 },
    /// value < threshold
    Below { threshold: f64 },
    /// |value − value| ≤ tolerance
    Equal {
        value: f64,
        #[serde(default)]
        tolerance: f64,
    },
    /// Percent change against the window just before: fires at or beyond
    /// `percent` (negative: a drop, e.g. −50; positive: a rise).
    Change { percent: f64 },
    /// No events for `minutes` (per group seen in the hour before).
    Absent { minutes: u32 },
    /// More than `sigmas` standard deviations from the mean of the last
    /// `baselineMinutes` one-minute values.
    #[serde(rename_all = "camelCase")]
    Anomaly {
        sigmas: f64,
        #[serde(default = "sixty")]
        baseline_minutes: u32,
        #[serde(default)]
        direction: Direction,
    },
}

fn sixty() -> u32 {
    60
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Both,
    Above,
    Below,
}

impl Condition {
    /// The number a value is compared with, for logs and notifications.
    pub fn threshold(&self) -> Option<f64> {
        match self {
            Condition::Above { threshold } | Condition::Below { threshold } => Some(*threshold),
            Condition::Equal { value, .. } => Some(*value),
            Condition::Change { percent } => Some(*percent),
            Condition::Absent { minutes } => Some(*minutes as f64),
            Condition::Anomaly { sigmas, .. } => Some(*sigmas),
        }
    }
}

/// Why rules could not be loaded. A file error stops the daemon at start; a rule of
/// `alert_rules` that fails is skipped and shown by the rules API.
#[derive(Debug, Error)]
pub enum RulesError {
    #[error("cannot read rules file {}: {source}; check alerting.rules_file", path.display())]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML/YAML or not of the rules' shape; `detail` says where.
    #[error("{}: {detail}", path.display())]
    Syntax { path: PathBuf, detail: String },
    #[error("rule '{id}': {problem}")]
    Invalid { id: String, problem: RuleProblem },
    /// A document of `alert_rules` that is not a rule.
    #[error("alert_rules {id}: {detail}; fix or delete that document")]
    Document { id: String, detail: String },
}

/// What is wrong in one rule; completes `rule '<id>': …`.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RuleProblem {
    #[error("id must be letters, digits, '_', '-' or '.'")]
    InvalidId,
    /// The measure, filters or group-by, as the query model checks them.
    #[error("{0}")]
    Query(String),
    #[error("measure: a top-K list is not a number to alert on")]
    TopK,
    #[error("{field}: {detail}")]
    Duration { field: &'static str, detail: String },
    #[error("{0} must be whole minutes (rules are evaluated per minute)")]
    NotWholeMinutes(&'static str),
    #[error("condition: an anomaly needs sigmas > 0 and baselineMinutes ≥ 5")]
    Anomaly,
    #[error("condition: its numbers must be finite (not NaN or infinity)")]
    NotFinite,
    #[error("condition.minutes must be at least 1")]
    AbsentMinutes,
    #[error("condition.tolerance must not be negative")]
    NegativeTolerance,
    #[error("condition.percent must be negative (a drop) or positive (a rise), not 0")]
    ZeroChange,
    #[error("notifiers: '{notifier}' is not configured (known: {known})")]
    UnknownNotifier { notifier: String, known: String },
    #[error("two rules have this id")]
    DuplicateId,
    #[error("defined in the file and in alert_rules; the file wins")]
    InFileAndCollection,
}

impl RuleProblem {
    pub(crate) fn of(self, id: &str) -> RulesError {
        RulesError::Invalid {
            id: id.to_string(),
            problem: self,
        }
    }
}

/// A checked rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub config: RuleConfig,
    pub name: String,
    pub window: Duration,
    pub for_: Duration,
    pub repeat: Option<Duration>,
    /// Where it came from: `file` or `collection`.
    pub source: &'static str,
}

fn minutes(
    rule: &str,
    field: &'static str,
    text: &str,
    allow_zero: bool,
) -> Result<Duration, RulesError> {
    let t = text.trim();
    if allow_zero && (t == "0" || t == "0m" || t == "0s") {
        return Ok(Duration::ZERO);
    }
    let ms = parse_shift(t).map_err(|detail| RuleProblem::Duration { field, detail }.of(rule))?;
    if ms % 60_000 != 0 {
        return Err(RuleProblem::NotWholeMinutes(field).of(rule));
    }
    Ok(Duration::from_millis(ms as u64))
}

impl Rule {
    pub fn check(
        config: RuleConfig,
        source: &'static str,
        known_notifiers: &[String],
    ) -> Result<Rule, RulesError> {
        let id = config.id.clone();
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            return Err(RuleProblem::InvalidId.of(&id));
        }
        // Reuse the query model's checks for the measure and filters.
        let as_query = serde_json::json!({
            "eventType": config.event_type,
            "spec": config.spec,
            "measures": [config.measure],
            "filters": config.filters,
            "groupBy": config.group_by,
        });
        crate::query::model::parse(&as_query).map_err(|e| {
            RuleProblem::Query(e.to_string().replace("measures[0]", "measure")).of(&id)
        })?;
        if matches!(config.measure.kind, MeasureKind::Topk { .. }) {
            return Err(RuleProblem::TopK.of(&id));
        }
        let window = minutes(&id, "window", &config.window, false)?;
        let for_ = minutes(&id, "for", &config.for_, true)?;
        let repeat = minutes(&id, "repeatInterval", &config.repeat_interval, true)?;
        // TOML's `nan`/`inf` and YAML's `.nan`/`.inf` parse as numbers; a NaN
        // threshold never compares true, so such a rule would never fire.
        let numbers = match &config.condition {
            Condition::Above { threshold } | Condition::Below { threshold } => vec![*threshold],
            Condition::Equal { value, tolerance } => vec![*value, *tolerance],
            Condition::Change { percent } => vec![*percent],
            Condition::Anomaly { sigmas, .. } => vec![*sigmas],
            Condition::Absent { .. } => Vec::new(),
        };
        if numbers.iter().any(|n| !n.is_finite()) {
            return Err(RuleProblem::NotFinite.of(&id));
        }
        match &config.condition {
            Condition::Anomaly {
                sigmas,
                baseline_minutes,
                ..
            } if sigmas.is_nan() || *sigmas <= 0.0 || *baseline_minutes < 5 => {
                return Err(RuleProblem::Anomaly.of(&id));
            }
            Condition::Absent { minutes } if *minutes == 0 => {
                return Err(RuleProblem::AbsentMinutes.of(&id));
            }
            Condition::Equal { tolerance, .. } if *tolerance < 0.0 => {
                return Err(RuleProblem::NegativeTolerance.of(&id));
            }
            Condition::Change { percent } if *percent == 0.0 => {
                return Err(RuleProblem::ZeroChange.of(&id));
            }
            _ => {}
        }
        for n in &config.notifiers {
            if !known_notifiers.iter().any(|k| k == n) {
                let known = if known_notifiers.is_empty() {
                    "none".to_string()
                } else {
                    known_notifiers.join(", ")
                };
                return Err(RuleProblem::UnknownNotifier {
                    notifier: n.clone(),
                    known,
                }
                .of(&id));
            }
        }
        let name = config.name.clone().unwrap_or_else(|| id.clone());
        Ok(Rule {
            name,
            window,
            for_,
            repeat: (!repeat.is_zero()).then_some(repeat),
            source,
            config,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rules: Vec<RuleConfig>,
}

/// Reads a rules file; every error names the file and, where it can, the rule and field.
pub fn load_file(path: &Path, known_notifiers: &[String]) -> Result<Vec<Rule>, RulesError> {
    let text = std::fs::read_to_string(path).map_err(|source| RulesError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    parse_file(path, &text, known_notifiers)
}

/// The text of a rules file, checked as [`load_file`] checks it: `path` says
/// the format (`.toml` is TOML, anything else YAML) and names the file in errors.
/// Public for the fuzz targets (fuzz/), which have the text and no file.
pub fn parse_file(
    path: &Path,
    text: &str,
    known_notifiers: &[String],
) -> Result<Vec<Rule>, RulesError> {
    let syntax = |detail: String| RulesError::Syntax {
        path: path.to_path_buf(),
        detail,
    };
    let file: RulesFile = match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => toml::from_str(text).map_err(|e| syntax(e.to_string()))?,
        _ => {
            let de = serde_yaml::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de)
                .map_err(|e| syntax(format!("{}: {}", e.path(), e.inner())))?
        }
    };
    check_all(file.rules, "file", known_notifiers)
}

pub fn check_all(
    configs: Vec<RuleConfig>,
    source: &'static str,
    known_notifiers: &[String],
) -> Result<Vec<Rule>, RulesError> {
    let mut rules = Vec::with_capacity(configs.len());
    for c in configs {
        let rule = Rule::check(c, source, known_notifiers)?;
        if rules.iter().any(|r: &Rule| r.config.id == rule.config.id) {
            return Err(RuleProblem::DuplicateId.of(&rule.config.id));
        }
        rules.push(rule);
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<Vec<Rule>, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rules.yaml");
        std::fs::write(&p, yaml).unwrap();
        load_file(&p, &["ops".to_string()]).map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_rule_loads() {
        let rules = load(
            r#"
rules:
  - id: slow-pages
    name: Slow page loads
    eventType: page_view
    measure: { type: percentile, metric: pageLoadTime, percentile: 95 }
    filters: [ { dimension: deviceType, op: eq, values: [mobile] } ]
    groupBy: [country]
    window: 5m
    condition: { type: above, threshold: 3000 }
    for: 5m
    severity: critical
    labels: { team: web }
    annotations: { summary: "p95 {{value}} ms in {{country}}" }
    notifiers: [ops]
    repeatInterval: 1h
"#,
        )
        .unwrap();
        assert_eq!(rules[0].window, Duration::from_secs(300));
        assert_eq!(rules[0].repeat, Some(Duration::from_secs(3600)));
        assert_eq!(rules[0].source, "file");
    }

    #[test]
    fn errors_name_the_rule_and_field() {
        let cases = [
            ("rules:\n  - id: a\n    condition: { type: above, threshold: 1 }\n    window: 30s\n", "rule 'a': window"),
            ("rules:\n  - id: a\n    condition: { type: sideways }\n", "condition"),
            ("rules:\n  - id: a\n    condition: { type: above, threshold: 1 }\n    notifiers: [pager]\n", "'pager' is not configured"),
            ("rules:\n  - id: a\n    condition: { type: above, threshold: 1 }\n    measure: { type: percentile, metric: x, percentile: 150 }\n", "rule 'a': measure.percentile"),
            ("rules:\n  - id: a\n    condition: { type: above, threshold: 1 }\n    colour: red\n", "colour"),
            ("rules:\n  - id: a\n    condition: { type: anomaly, sigmas: 0 }\n", "sigmas"),
            // Found by the fuzz target's invariant (fuzz/regressions/alert_rules/).
            ("rules:\n  - id: a\n    condition: { type: above, threshold: .nan }\n", "finite"),
            ("rules:\n  - id: a\n    condition: { type: equal, value: 1, tolerance: .inf }\n", "finite"),
            ("rules:\n  - id: a\n    condition: { type: change, percent: -.inf }\n", "finite"),
        ];
        for (yaml, words) in cases {
            let e = load(yaml).unwrap_err();
            assert!(e.contains(words), "{yaml} → {e}");
        }
    }
}
