//! Measuring a rule at one instant: reads the rollups through the query
//! engine and returns one [`Observation`] per instance (group).
//!
//! In: a rule and the evaluation time `t` (a minute boundary: every minute
//! before it is final). Out: observations keyed by the group's labels.

use std::collections::BTreeMap;
use std::time::Duration;

use mongodb::Database;

use super::condition::Observation;
use super::rules::{Condition, Rule};
use crate::query::compute;
use crate::query::model::{BuilderQuery, Fill, Format, Granularity, Measure, MeasureKind};
use crate::query::plan::{PlanContext, Retention};
use crate::query::run::{run_builder, Env, RunError};
use crate::store::CollectionNames;

pub type Labels = BTreeMap<String, String>;

pub struct Source<'a> {
    pub db: &'a Database,
    pub names: &'a CollectionNames,
    pub max_time: Duration,
}

fn query(rule: &Rule, measure: MeasureKind) -> BuilderQuery {
    let c = &rule.config;
    BuilderQuery {
        event_type: c.event_type.clone(),
        spec: c.spec.clone(),
        measures: vec![Measure {
            kind: measure,
            alias: None,
            window: None,
        }],
        filters: c.filters.clone(),
        group_by: c.group_by.clone(),
        granularity: Granularity::Minute,
        top_n: None,
        compare: None,
        fill: Fill::Null,
        alias: None,
        format: Format::Timeseries,
        live: false,
        adhoc_filters: Vec::new(),
    }
}

impl Source<'_> {
    /// Reads [from, t) once, minute by minute.
    async fn read(
        &self,
        q: &BuilderQuery,
        from: i64,
        to: i64,
    ) -> Result<crate::query::run::Outcome, RunError> {
        let env = Env {
            db: self.db,
            cache: None,
            cache_scope: "alerting",
            max_time: self.max_time,
            now_ms: to,
            horizon_ms: 0,
            max_rows: 500_000,
            max_series: 10_000,
        };
        let ctx = PlanContext {
            from_ms: from,
            to_ms: to,
            interval_ms: 60_000,
            now_ms: to,
            // Minute rollups for any window a rule can have.
            retention: Retention {
                minute: 0.0,
                ..Retention::default()
            },
            collections: self.names.clone(),
        };
        run_builder(&env, q, &ctx).await
    }

    /// Observations of every group of `rule` at `t`.
    pub async fn observe(
        &self,
        rule: &Rule,
        t: i64,
    ) -> Result<BTreeMap<Labels, Observation>, RunError> {
        let w = rule.window.as_millis() as i64;
        let mut out: BTreeMap<Labels, Observation> = BTreeMap::new();
        let totals = |q: &BuilderQuery,
                      o: &crate::query::run::Outcome,
                      from: i64,
                      to: i64|
         -> BTreeMap<Labels, Option<f64>> {
            compute::totals(q, &o.plan, &o.grid, from, to)
                .into_iter()
                .map(|(_, l, v)| (l, v))
                .collect()
        };
        match &rule.config.condition {
            Condition::Absent { minutes } => {
                let n = *minutes as i64 * 60_000;
                let q = query(rule, MeasureKind::Count);
                let o = self.read(&q, t - n - 3_600_000, t).await?;
                // Groups seen in the hour before the quiet period are the ones that can fall silent.
                for labels in totals(&q, &o, t - n - 3_600_000, t - n).into_keys() {
                    out.entry(labels).or_default();
                }
                if rule.config.group_by.is_empty() {
                    out.entry(Labels::new()).or_default();
                }
                for (labels, v) in totals(&q, &o, t - n, t) {
                    out.entry(labels).or_default().value = v;
                }
            }
            Condition::Change { .. } => {
                let q = query(rule, rule.config.measure.kind.clone());
                let o = self.read(&q, t - 2 * w, t).await?;
                for (labels, v) in totals(&q, &o, t - w, t) {
                    out.entry(labels).or_default().value = v;
                }
                for (labels, v) in totals(&q, &o, t - 2 * w, t - w) {
                    out.entry(labels).or_default().previous = v;
                }
            }
            Condition::Anomaly {
                baseline_minutes, ..
            } => {
                let q = query(rule, rule.config.measure.kind.clone());
                let b = *baseline_minutes as i64 * 60_000;
                let o = self.read(&q, t - w - b, t).await?;
                for (labels, v) in totals(&q, &o, t - w, t) {
                    out.entry(labels).or_default().value = v;
                }
                // The same measure over each window-long slice of the baseline, oldest first.
                // An empty slice counted nothing; for averages and extremes there is no value to learn from.
                let additive = matches!(
                    q.measures[0].kind,
                    MeasureKind::Count
                        | MeasureKind::Rate
                        | MeasureKind::Sum { .. }
                        | MeasureKind::Distinct { .. }
                );
                let slices = (b / w).max(1);
                for j in (1..=slices).rev() {
                    let (from, to) = (t - (j + 1) * w, t - j * w);
                    let values = totals(&q, &o, from, to);
                    let groups: std::collections::BTreeSet<Labels> =
                        out.keys().cloned().chain(values.keys().cloned()).collect();
                    for labels in groups {
                        let v = values.get(&labels).copied().flatten().or(if additive {
                            Some(0.0)
                        } else {
                            None
                        });
                        if let Some(v) = v {
                            out.entry(labels).or_default().baseline.push(v);
                        }
                    }
                }
            }
            _ => {
                let q = query(rule, rule.config.measure.kind.clone());
                let o = self.read(&q, t - w, t).await?;
                for (labels, v) in totals(&q, &o, t - w, t) {
                    out.entry(labels).or_default().value = v;
                }
            }
        }
        Ok(out)
    }
}
