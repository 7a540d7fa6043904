//! The scheduler: evaluates every rule at each minute boundary the rollups have
//! finalised, steps each instance's state machine, has the store record what changed,
//! and hands firing/resolved/repeat transitions to the notifiers without waiting for
//! them. Reloads the rules (file and `alert_rules`) every minute.
//!
//! In: the time up to which minutes are final (from the rollup flusher), the rules, the
//! instances the store restores at start. Out: transitions for the store,
//! notifications, and the rules and states the API shows.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mongodb::Database;
use thiserror::Error;
use tokio::sync::watch;

use super::condition::{evaluate, Observation};
use super::config::AlertingConfig;
use super::evaluate::{Labels, Source};
use super::instance::{date, instance_key, InstanceState};
use super::notify::{alertmanager, Notifiers, NotifiersError};
use super::rules::{self, Rule, RuleProblem, RulesError};
use super::state::{step, Phase, Transition};
use super::store::AlertStore;
use super::template::{notification, Kind, Moment};
use crate::store::CollectionNames;

/// Why the alert engine cannot start.
#[derive(Debug, Error)]
pub enum SetupError {
    #[error("{0}; fix [[alerting.notifiers]] or [alerting.retry]")]
    Notifiers(#[from] NotifiersError),
    /// A broken rules file is a start-up error: better than running without its rules.
    #[error("{0}")]
    RulesFile(#[from] RulesError),
}

/// An instance is identified by its rule's id and its instance key.
type InstanceKey = (String, String);

pub struct AlertEngine {
    config: AlertingConfig,
    store: AlertStore,
    notifiers: Arc<Notifiers>,
    rules: Mutex<Vec<Rule>>,
    /// Problems with the rules last loaded (shown by the API).
    rule_errors: Mutex<Vec<String>>,
    states: Mutex<HashMap<InstanceKey, InstanceState>>,
    /// Last time a firing instance was sent to notifiers that forget alerts not re-sent (Alertmanager).
    kept_alive: Mutex<HashMap<InstanceKey, i64>>,
    last_evaluated: Mutex<Option<i64>>,
}

/// A poisoned lock only means another evaluation panicked; its data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AlertEngine {
    /// Builds the notifiers and checks the rules file.
    pub fn new(
        config: AlertingConfig,
        db: Database,
        names: CollectionNames,
    ) -> Result<AlertEngine, SetupError> {
        let notifiers = Notifiers::new(config.notifiers.clone(), config.retry.clone())?;
        if let Some(path) = &config.rules_file {
            rules::load_file(path, &notifiers.names())?;
        }
        Ok(AlertEngine {
            notifiers: Arc::new(notifiers),
            rules: Mutex::new(Vec::new()),
            rule_errors: Mutex::new(Vec::new()),
            states: Mutex::new(HashMap::new()),
            kept_alive: Mutex::new(HashMap::new()),
            last_evaluated: Mutex::new(None),
            store: AlertStore::new(db, names),
            config,
        })
    }

    /// Rules from the file and from `alert_rules`; a bad rule in the
    /// collection is skipped and reported, never fatal.
    pub async fn reload_rules(&self) {
        let known = self.notifiers.names();
        let mut all: Vec<Rule> = Vec::new();
        let mut errors = Vec::new();
        if let Some(path) = &self.config.rules_file {
            match rules::load_file(path, &known) {
                Ok(r) => all.extend(r),
                Err(e) => errors.push(e.to_string()),
            }
        }
        match self.store.rule_documents().await {
            Ok(documents) => {
                for parsed in documents {
                    match parsed.and_then(|c| Rule::check(c, "collection", &known)) {
                        Ok(r) if all.iter().any(|x| x.config.id == r.config.id) => errors.push(
                            RuleProblem::InFileAndCollection
                                .of(&r.config.id)
                                .to_string(),
                        ),
                        Ok(r) => all.push(r),
                        Err(e) => errors.push(e.to_string()),
                    }
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
        for e in &errors {
            tracing::warn!("{e}");
        }
        // Instances of rules that are gone have nothing left to say.
        let kept = |(rule, _): &InstanceKey| all.iter().any(|r| &r.config.id == rule);
        lock(&self.states).retain(|k, _| kept(k));
        lock(&self.kept_alive).retain(|k, _| kept(k));
        *lock(&self.rules) = all;
        *lock(&self.rule_errors) = errors;
    }

    /// Restores pending and firing instances from `alerts`, so an episode
    /// survives a restart without firing twice.
    pub async fn restore(&self) -> Result<(), super::store::StoreError> {
        let restored = self.store.restore().await?;
        let mut states = lock(&self.states);
        for s in restored {
            states.insert((s.rule_id.clone(), s.instance.clone()), s);
        }
        Ok(())
    }

    /// Evaluates each minute boundary from the last one seen up to `final_until`.
    pub async fn catch_up(self: &Arc<Self>, final_until: i64) {
        let t_end = final_until - final_until.rem_euclid(60_000);
        let start = {
            let last = lock(&self.last_evaluated);
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
            *lock(&self.last_evaluated) = Some(t);
            t += 60_000;
        }
    }

    pub async fn evaluate_at(self: &Arc<Self>, t: i64) {
        let rules: Vec<Rule> = lock(&self.rules)
            .iter()
            .filter(|r| r.config.enabled)
            .cloned()
            .collect();
        let source = Source {
            db: self.store.db(),
            names: self.store.names(),
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
        let mut states = lock(&self.states);
        states.retain(|_, s| !matches!(s.phase, Phase::Normal) || s.evaluated_at >= horizon);
        lock(&self.kept_alive).retain(|k, _| {
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
        let known: Vec<Labels> = lock(&self.states)
            .values()
            .filter(|s| s.rule_id == rule.config.id && !matches!(s.phase, Phase::Normal))
            .map(|s| s.labels.clone())
            .collect();
        for labels in known {
            observations.entry(labels).or_default();
        }
        let for_ms = rule.for_.as_millis() as i64;
        let repeat_ms = rule.repeat.map(|r| r.as_millis() as i64);
        for (labels, o) in observations {
            let verdict = evaluate(&rule.config.condition, &o);
            let instance = instance_key(&labels);
            let key = (rule.config.id.clone(), instance.clone());
            let (transition, since, firing) = {
                let mut states = lock(&self.states);
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
                let mut phase = s.phase;
                let tr = step(&mut phase, verdict.holds, t, for_ms, repeat_ms);
                s.set_phase(phase);
                s.value = verdict.shown;
                s.evaluated_at = date(t);
                // The episode's start, also for the transition that ends it.
                let since = match (before, phase) {
                    (Phase::Firing { since, .. }, _) | (_, Phase::Firing { since, .. }) => since,
                    (Phase::Pending { since }, _) | (_, Phase::Pending { since }) => since,
                    _ => t,
                };
                (tr, since, matches!(phase, Phase::Firing { .. }))
            };
            let moment = Moment {
                rule,
                labels: &labels,
                instance: &instance,
                value: verdict.shown,
                since,
                at: t,
            };
            if firing && matches!(transition, Transition::Stay | Transition::Repeat) {
                self.keep_alive(&moment);
            }
            if transition != Transition::Stay {
                self.record(&moment, transition).await;
            }
        }
    }

    /// Re-sends a firing instance to notifiers that would otherwise resolve it
    /// on their own (Alertmanager), every `alertmanager::RESEND_INTERVAL`.
    fn keep_alive(self: &Arc<Self>, m: &Moment<'_>) {
        let targets: Vec<String> = m
            .rule
            .config
            .notifiers
            .iter()
            .filter(|n| self.notifiers.needs_resend(n))
            .cloned()
            .collect();
        if targets.is_empty() {
            return;
        }
        let key = (m.rule.config.id.clone(), m.instance.to_string());
        {
            let mut last = lock(&self.kept_alive);
            let every = alertmanager::RESEND_INTERVAL.as_millis() as i64;
            if last.get(&key).is_some_and(|l| m.at - l < every) {
                return;
            }
            last.insert(key, m.at);
        }
        let (n, _) = notification(m, Kind::Reminder, &self.config.public_url);
        let notifiers = self.notifiers.clone();
        tokio::spawn(async move {
            notifiers.send(&targets, &n).await;
        });
    }

    /// Has the store record the transition, then notifies off the evaluation path.
    async fn record(self: &Arc<Self>, m: &Moment<'_>, tr: Transition) {
        let kind = match tr {
            Transition::Resolve => Kind::Resolved,
            Transition::Repeat => Kind::Reminder,
            _ => Kind::Firing,
        };
        let (n, _) = notification(m, kind, &self.config.public_url);
        let notify = matches!(
            tr,
            Transition::Fire | Transition::Repeat | Transition::Resolve
        );
        let rule = m.rule;
        if tr == Transition::Fire {
            lock(&self.kept_alive).insert((rule.config.id.clone(), m.instance.to_string()), m.at);
        }
        let id = match self.store.record(m, tr, &n, notify).await {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::warn!(rule = %rule.config.id, "{e}");
                None
            }
        };
        tracing::info!(rule = %rule.config.id, instance = m.instance, state = tr.state(), value = ?m.value, "alert transition");
        if !notify || rule.config.notifiers.is_empty() {
            return;
        }
        // Notifying never holds up evaluation: the log is added when the sends finish.
        let notifiers = self.notifiers.clone();
        let store = self.store.clone();
        let targets = rule.config.notifiers.clone();
        let rule_id = rule.config.id.clone();
        tokio::spawn(async move {
            let deliveries = notifiers.send(&targets, &n).await;
            if let Some(id) = id {
                if let Err(e) = store.log_deliveries(id, &deliveries).await {
                    tracing::warn!(rule = %rule_id, "{e}");
                }
            }
        });
    }

    /// The rules in force, as last loaded.
    pub fn rules(&self) -> Vec<Rule> {
        lock(&self.rules).clone()
    }

    /// Problems with the rules last loaded, one message each.
    pub fn rule_errors(&self) -> Vec<String> {
        lock(&self.rule_errors).clone()
    }

    /// The configured notifiers' names.
    pub fn notifier_names(&self) -> Vec<String> {
        self.notifiers.names()
    }

    /// Every known instance, by rule id then instance.
    pub fn states(&self) -> Vec<InstanceState> {
        let mut v: Vec<InstanceState> = lock(&self.states).values().cloned().collect();
        v.sort_by(|a, b| (&a.rule_id, &a.instance).cmp(&(&b.rule_id, &b.instance)));
        v
    }

    pub fn store(&self) -> &AlertStore {
        &self.store
    }

    pub fn db(&self) -> &Database {
        self.store.db()
    }

    pub fn names(&self) -> &CollectionNames {
        self.store.names()
    }

    /// Runs until `stop`: evaluates when the rollups finalise minutes, reloads rules every minute.
    pub async fn run(
        self: Arc<Self>,
        mut final_until: watch::Receiver<i64>,
        mut stop: watch::Receiver<bool>,
    ) {
        self.reload_rules().await;
        if let Err(e) = self.restore().await {
            tracing::warn!("{e}");
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
