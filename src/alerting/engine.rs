//! The alert engine: evaluates every rule at each minute boundary the rollups
//! have finalised, steps each instance's state machine, stores transitions
//! in `alerts`, and hands firing/resolved/repeat transitions to the notifiers
//! without waiting for them.
//!
//! In: the time up to which minutes are final (from the rollup flusher), the
//! rules (file and `alert_rules`). Out: documents in `alerts` (with their
//! notification log), notifications, and the state the API shows.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bson::{doc, Bson, Document};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::Database;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::condition::{evaluate, Observation};
use super::evaluate::{Labels, Source};
use super::notify::{Notification, NotifierConfig, Notifiers, NotifyState, RetryConfig};
use super::rules::{self, Rule, RuleConfig};
use super::state::{step, Phase, Transition};
use crate::store::CollectionNames;

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
    phase: Phase,
}

pub struct AlertEngine {
    config: AlertingConfig,
    db: Database,
    names: CollectionNames,
    notifiers: Arc<Notifiers>,
    rules: Mutex<Vec<Rule>>,
    /// Problems with the rules last loaded (shown by the API).
    rule_errors: Mutex<Vec<String>>,
    states: Mutex<HashMap<(String, String), InstanceState>>,
    /// Last time a firing instance was sent to notifiers that forget alerts not re-sent (Alertmanager).
    kept_alive: Mutex<HashMap<(String, String), i64>>,
    last_evaluated: Mutex<Option<i64>>,
}

fn instance_key(labels: &Labels) -> String {
    if labels.is_empty() {
        return "all".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn date(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// `{{name}}` (or `{{ name }}`) → value, for annotations, in one pass over
/// the template: a value is never read again, so a label value that itself
/// holds `{{x}}` stays as it is. An unknown name is left as written.
fn render(template: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        match vars.get(after[..close].trim()) {
            Some(value) => out.push_str(value),
            None => out.push_str(&rest[open..open + 2 + close + 2]),
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

impl AlertEngine {
    pub fn new(
        config: AlertingConfig,
        db: Database,
        names: CollectionNames,
    ) -> Result<AlertEngine, String> {
        let notifiers = Notifiers::new(config.notifiers.clone(), config.retry.clone())
            .map_err(|e| e.to_string())?;
        let engine = AlertEngine {
            notifiers: Arc::new(notifiers),
            rules: Mutex::new(Vec::new()),
            rule_errors: Mutex::new(Vec::new()),
            states: Mutex::new(HashMap::new()),
            kept_alive: Mutex::new(HashMap::new()),
            last_evaluated: Mutex::new(None),
            config,
            db,
            names,
        };
        // A broken file is a start-up error: better than running without its rules.
        if let Some(path) = &engine.config.rules_file {
            rules::load_file(path, &engine.notifiers.names())?;
        }
        Ok(engine)
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rules from the file and from `alert_rules`; a bad rule in the
    /// collection is skipped and reported, never fatal.
    pub async fn reload_rules(&self) {
        let known = self.notifiers.names();
        let mut all = Vec::new();
        let mut errors = Vec::new();
        if let Some(path) = &self.config.rules_file {
            match rules::load_file(path, &known) {
                Ok(r) => all.extend(r),
                Err(e) => errors.push(e),
            }
        }
        match self
            .db
            .collection::<Document>(&self.names.alert_rules)
            .find(doc! {})
            .await
        {
            Ok(cursor) => {
                let docs: Vec<Document> = cursor.try_collect().await.unwrap_or_default();
                for mut d in docs {
                    let id = d.get("_id").cloned();
                    d.remove("_id");
                    if let (Some(Bson::String(s)), false) = (&id, d.contains_key("id")) {
                        d.insert("id", s.clone());
                    }
                    let parsed: Result<RuleConfig, String> =
                        bson::from_document(d).map_err(|e| format!("alert_rules {id:?}: {e}"));
                    match parsed.and_then(|c| Rule::check(c, "collection", &known)) {
                        Ok(r) if all.iter().any(|x: &Rule| x.config.id == r.config.id) => errors
                            .push(format!(
                                "rule '{}': defined in the file and in alert_rules; the file wins",
                                r.config.id
                            )),
                        Ok(r) => all.push(r),
                        Err(e) => errors.push(e),
                    }
                }
            }
            Err(e) => errors.push(format!("cannot read alert_rules: {e}")),
        }
        for e in &errors {
            tracing::warn!("{e}");
        }
        // Instances of rules that are gone have nothing left to say.
        Self::lock(&self.states).retain(|(rule, _), _| all.iter().any(|r| &r.config.id == rule));
        Self::lock(&self.kept_alive)
            .retain(|(rule, _), _| all.iter().any(|r| &r.config.id == rule));
        *Self::lock(&self.rules) = all;
        *Self::lock(&self.rule_errors) = errors;
    }

    /// Restores pending and firing instances from `alerts`, so an episode
    /// survives a restart without firing twice.
    pub async fn restore(&self) -> Result<(), String> {
        let pipeline = vec![
            doc! { "$sort": { "at": -1 } },
            doc! { "$group": { "_id": { "rule": "$ruleId", "instance": "$instance" }, "last": { "$first": "$$ROOT" } } },
        ];
        let cursor = self
            .db
            .collection::<Document>(&self.names.alerts)
            .aggregate(pipeline)
            .await
            .map_err(|e| format!("reading alert states: {e}"))?;
        let rows: Vec<Document> = cursor
            .try_collect()
            .await
            .map_err(|e| format!("reading alert states: {e}"))?;
        let mut states = Self::lock(&self.states);
        for r in rows {
            let Ok(last) = r.get_document("last") else {
                continue;
            };
            let since = last
                .get_datetime("startsAt")
                .or_else(|_| last.get_datetime("at"))
                .map(|d| d.timestamp_millis())
                .unwrap_or(0);
            let phase = match last.get_str("state").unwrap_or("") {
                "pending" => Phase::Pending { since },
                "firing" => Phase::Firing {
                    since,
                    notified: last
                        .get_datetime("notifiedAt")
                        .map(|d| d.timestamp_millis())
                        .unwrap_or(since),
                },
                _ => continue,
            };
            let labels: Labels = last
                .get_document("labels")
                .map(|l| {
                    l.iter()
                        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            let rule_id = last.get_str("ruleId").unwrap_or("").to_string();
            let instance = last.get_str("instance").unwrap_or("").to_string();
            states.insert(
                (rule_id.clone(), instance.clone()),
                InstanceState {
                    rule_id,
                    rule_name: last.get_str("ruleName").unwrap_or("").to_string(),
                    instance,
                    labels,
                    state: if matches!(phase, Phase::Pending { .. }) {
                        "pending"
                    } else {
                        "firing"
                    },
                    since: Some(date(since)),
                    value: last.get_f64("value").ok(),
                    evaluated_at: last
                        .get_datetime("at")
                        .map(|d| date(d.timestamp_millis()))
                        .unwrap_or_default(),
                    phase,
                },
            );
        }
        Ok(())
    }

    /// Evaluates each minute boundary from the last one seen up to `final_until`.
    pub async fn catch_up(self: &Arc<Self>, final_until: i64) {
        let t_end = final_until - final_until.rem_euclid(60_000);
        let start = {
            let last = Self::lock(&self.last_evaluated);
            match *last {
                None => t_end,
                Some(l) if l >= t_end => return,
                Some(l) => {
                    (l + 60_000).max(t_end - self.config.max_catch_up_minutes as i64 * 60_000)
                }
            }
        };
        let mut t = start;
        while t <= t_end {
            self.evaluate_at(t).await;
            *Self::lock(&self.last_evaluated) = Some(t);
            t += 60_000;
        }
    }

    pub async fn evaluate_at(self: &Arc<Self>, t: i64) {
        let rules: Vec<Rule> = Self::lock(&self.rules)
            .iter()
            .filter(|r| r.config.enabled)
            .cloned()
            .collect();
        let source = Source {
            db: &self.db,
            names: &self.names,
            max_time: Duration::from_secs_f64(self.config.query_timeout_secs),
        };
        for rule in rules {
            let observations = match source.observe(&rule, t).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(rule = %rule.config.id, "cannot evaluate: {e}");
                    continue;
                }
            };
            self.apply(&rule, t, observations).await;
        }
        // Keep memory bounded: an instance normal for an hour is forgotten (it
        // comes back if it is observed again).
        let horizon = date(t - 3_600_000);
        let mut states = Self::lock(&self.states);
        states.retain(|_, s| !matches!(s.phase, Phase::Normal) || s.evaluated_at >= horizon);
        Self::lock(&self.kept_alive).retain(|k, _| {
            states
                .get(k)
                .is_some_and(|s| matches!(s.phase, Phase::Firing { .. }))
        });
    }

    /// Steps every instance of `rule` (observed now, or in alert before) and stores what changed.
    async fn apply(
        self: &Arc<Self>,
        rule: &Rule,
        t: i64,
        mut observations: BTreeMap<Labels, Observation>,
    ) {
        let known: Vec<(String, Labels)> = Self::lock(&self.states)
            .values()
            .filter(|s| s.rule_id == rule.config.id && !matches!(s.phase, Phase::Normal))
            .map(|s| (s.instance.clone(), s.labels.clone()))
            .collect();
        for (_, labels) in known {
            observations.entry(labels).or_default();
        }
        let for_ms = rule.for_.as_millis() as i64;
        let repeat_ms = rule.repeat.map(|r| r.as_millis() as i64);
        for (labels, o) in observations {
            let verdict = evaluate(&rule.config.condition, &o);
            let instance = instance_key(&labels);
            let key = (rule.config.id.clone(), instance.clone());
            let (transition, since, firing) = {
                let mut states = Self::lock(&self.states);
                let s = states.entry(key).or_insert_with(|| InstanceState {
                    rule_id: rule.config.id.clone(),
                    rule_name: rule.name.clone(),
                    instance: instance.clone(),
                    labels: labels.clone(),
                    state: "normal",
                    since: None,
                    value: None,
                    evaluated_at: date(t),
                    phase: Phase::Normal,
                });
                let before = s.phase;
                let tr = step(&mut s.phase, verdict.holds, t, for_ms, repeat_ms);
                s.value = verdict.shown;
                s.evaluated_at = date(t);
                s.state = match s.phase {
                    Phase::Normal => "normal",
                    Phase::Pending { .. } => "pending",
                    Phase::Firing { .. } => "firing",
                };
                s.since = match s.phase {
                    Phase::Pending { since } | Phase::Firing { since, .. } => Some(date(since)),
                    Phase::Normal => None,
                };
                let since = match (before, s.phase) {
                    (Phase::Firing { since, .. }, _) | (_, Phase::Firing { since, .. }) => since,
                    (Phase::Pending { since }, _) | (_, Phase::Pending { since }) => since,
                    _ => t,
                };
                (tr, since, matches!(s.phase, Phase::Firing { .. }))
            };
            if firing && matches!(transition, Transition::Stay | Transition::Repeat) {
                self.keep_alive(rule, &labels, &instance, verdict.shown, since, t);
            }
            if transition != Transition::Stay {
                self.record(
                    rule,
                    &labels,
                    &instance,
                    transition,
                    verdict.shown,
                    since,
                    t,
                )
                .await;
            }
        }
    }

    /// Re-sends a firing instance to notifiers that would otherwise resolve it
    /// on their own (Alertmanager), every `alertmanager::RESEND_INTERVAL`.
    fn keep_alive(
        self: &Arc<Self>,
        rule: &Rule,
        labels: &Labels,
        instance: &str,
        value: Option<f64>,
        since: i64,
        t: i64,
    ) {
        let targets: Vec<String> = rule
            .config
            .notifiers
            .iter()
            .filter(|n| self.notifiers.needs_resend(n))
            .cloned()
            .collect();
        if targets.is_empty() {
            return;
        }
        let key = (rule.config.id.clone(), instance.to_string());
        {
            let mut last = Self::lock(&self.kept_alive);
            let every = super::notify::alertmanager::RESEND_INTERVAL.as_millis() as i64;
            if last.get(&key).is_some_and(|l| t - l < every) {
                return;
            }
            last.insert(key, t);
        }
        let (n, _) = self.notification(rule, labels, instance, false, value, since, t, true);
        let notifiers = self.notifiers.clone();
        tokio::spawn(async move {
            notifiers.send(&targets, &n).await;
        });
    }

    /// The notification of a transition, and its annotations.
    #[allow(clippy::too_many_arguments)]
    fn notification(
        &self,
        rule: &Rule,
        labels: &Labels,
        instance: &str,
        resolved: bool,
        value: Option<f64>,
        since: i64,
        t: i64,
        repeat: bool,
    ) -> (Notification, BTreeMap<String, String>) {
        let threshold = rule.config.condition.threshold();
        let mut vars: BTreeMap<String, String> = labels.clone();
        vars.insert(
            "value".into(),
            value.map_or("no data".into(), super::notify::number),
        );
        vars.insert(
            "threshold".into(),
            threshold.map_or(String::new(), super::notify::number),
        );
        vars.insert("rule".into(), rule.name.clone());
        vars.insert("instance".into(), instance.to_string());
        let mut annotations: BTreeMap<String, String> = rule
            .config
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), render(v, &vars)))
            .collect();
        annotations
            .entry("summary".into())
            .or_insert_with(|| format!("{} ({instance}): {}", rule.name, vars["value"]));
        let mut all_labels = rule.config.labels.clone();
        all_labels.extend(labels.clone());
        all_labels.insert("alertname".into(), rule.name.clone());
        all_labels.insert("severity".into(), rule.config.severity.clone());
        let n = Notification {
            rule_id: rule.config.id.clone(),
            rule_name: rule.name.clone(),
            instance: instance.to_string(),
            state: if resolved {
                NotifyState::Resolved
            } else {
                NotifyState::Firing
            },
            severity: rule.config.severity.clone(),
            labels: all_labels,
            annotations: annotations.clone(),
            value,
            threshold,
            starts_at: date(since),
            ends_at: resolved.then(|| date(t)),
            generator_url: format!(
                "{}/v1/alerts/history?rule={}",
                self.config.public_url.trim_end_matches('/'),
                rule.config.id
            ),
            repeat,
        };
        (n, annotations)
    }

    #[allow(clippy::too_many_arguments)]
    async fn record(
        self: &Arc<Self>,
        rule: &Rule,
        labels: &Labels,
        instance: &str,
        tr: Transition,
        value: Option<f64>,
        since: i64,
        t: i64,
    ) {
        let resolved = tr == Transition::Resolve;
        let (n, annotations) = self.notification(
            rule,
            labels,
            instance,
            resolved,
            value,
            since,
            t,
            tr == Transition::Repeat,
        );
        let mut d = doc! {
            "ruleId": &rule.config.id,
            "ruleName": &rule.name,
            "instance": instance,
            "labels": bson::to_bson(labels).unwrap_or(Bson::Null),
            "state": tr.state(),
            "repeat": tr == Transition::Repeat,
            "value": value.map(Bson::Double).unwrap_or(Bson::Null),
            "threshold": n.threshold.map(Bson::Double).unwrap_or(Bson::Null),
            "at": bson::DateTime::from_millis(t),
            "startsAt": bson::DateTime::from_millis(since),
            "severity": &rule.config.severity,
            "summary": annotations.get("summary").cloned().unwrap_or_default(),
            "annotations": bson::to_bson(&annotations).unwrap_or(Bson::Null),
            "notifications": [],
        };
        if resolved {
            d.insert("endsAt", bson::DateTime::from_millis(t));
        }
        let notify = matches!(
            tr,
            Transition::Fire | Transition::Repeat | Transition::Resolve
        );
        if notify {
            d.insert("notifiedAt", bson::DateTime::from_millis(t));
        }
        if tr == Transition::Fire {
            Self::lock(&self.kept_alive).insert((rule.config.id.clone(), instance.to_string()), t);
        }
        let alerts = self.db.collection::<Document>(&self.names.alerts);
        let id = match alerts.insert_one(d).await {
            Ok(r) => r.inserted_id,
            Err(e) => {
                tracing::warn!(rule = %rule.config.id, "cannot store the alert transition: {e}");
                Bson::Null
            }
        };
        tracing::info!(rule = %rule.config.id, instance, state = tr.state(), value = ?value, "alert transition");
        if !notify || rule.config.notifiers.is_empty() {
            return;
        }
        // Notifying never holds up evaluation: the log is added when the sends finish.
        let engine = self.clone();
        let targets = rule.config.notifiers.clone();
        tokio::spawn(async move {
            let deliveries = engine.notifiers.send(&targets, &n).await;
            let log = bson::to_bson(&deliveries).unwrap_or(Bson::Array(Vec::new()));
            if id != Bson::Null {
                let _ = engine
                    .db
                    .collection::<Document>(&engine.names.alerts)
                    .update_one(
                        doc! { "_id": id },
                        doc! { "$set": { "notifications": log } },
                    )
                    .await;
            }
        });
    }

    pub fn rules_view(&self) -> serde_json::Value {
        let rules: Vec<serde_json::Value> = Self::lock(&self.rules)
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(&r.config).unwrap_or_default();
                v["source"] = r.source.into();
                v
            })
            .collect();
        serde_json::json!({ "rules": rules, "errors": *Self::lock(&self.rule_errors), "notifiers": self.notifiers.names() })
    }

    pub fn states_view(&self) -> Vec<InstanceState> {
        let mut v: Vec<InstanceState> = Self::lock(&self.states).values().cloned().collect();
        v.sort_by(|a, b| (&a.rule_id, &a.instance).cmp(&(&b.rule_id, &b.instance)));
        v
    }

    pub fn db(&self) -> &Database {
        &self.db
    }

    pub fn names(&self) -> &CollectionNames {
        &self.names
    }

    /// Runs until `stop`: evaluates when the rollups finalise minutes, reloads rules every minute.
    pub async fn run(
        self: Arc<Self>,
        mut final_until: watch::Receiver<i64>,
        mut stop: watch::Receiver<bool>,
    ) {
        self.reload_rules().await;
        if let Err(e) = self.restore().await {
            tracing::warn!("{e}; alert states start fresh");
        }
        let mut reload = tokio::time::interval(Duration::from_secs(60));
        reload.tick().await;
        loop {
            tokio::select! {
                changed = final_until.changed() => {
                    if changed.is_err() { break; }
                    let t = *final_until.borrow_and_update();
                    self.catch_up(t).await;
                }
                _ = reload.tick() => self.reload_rules().await,
                _ = stop.changed() => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::render;
    use std::collections::BTreeMap;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn templates_are_expanded_once_and_values_are_not_read_again() {
        let v = vars(&[("country", "{{value}}"), ("value", "812")]);
        assert_eq!(
            render("p95 {{value}} ms in {{ country }}", &v),
            "p95 812 ms in {{value}}"
        );
        assert_eq!(
            render("{{unknown}} and {{value}}", &v),
            "{{unknown}} and 812"
        );
        assert_eq!(render("no close {{value", &v), "no close {{value");
        assert_eq!(render("", &v), "");
        assert_eq!(render("{{value}}{{value}}", &v), "812812");
    }
}
