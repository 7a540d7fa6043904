//! The logical plan, a pure function. In: a builder query, its time range,
//! Grafana's interval and the data source's retention. Out: a [`Plan`] — which
//! rollup level and collection to read, the bucket size, the aligned range read
//! (earlier than the panel for moving windows), the rows' filter, and which
//! metrics and sketches each bucket needs — or a [`ModelError`] naming the
//! field to change. Nothing here knows MongoDB's syntax: `generate` writes the
//! pipeline of a plan, and a plan for another range (a cache's uncached tail,
//! a comparison's earlier period) is a plan of its own.

use serde::{Deserialize, Serialize};

use super::filter::{row_filter, RowFilter};
use super::model::{parse_shift, BuilderQuery, MeasureKind, ModelError};
use crate::rollup::Level;
use crate::store::CollectionNames;

/// How long the daemon keeps each level, in days (0 = forever). Must match
/// the daemon's `rollups.ttl`; set in the data source's `retentionDays`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    pub minute: f64,
    pub hour: f64,
    pub day: f64,
    pub month: f64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            minute: 30.0,
            hour: 365.0,
            day: 1825.0,
            month: 0.0,
        }
    }
}

impl Retention {
    fn days(&self, level: Level) -> f64 {
        match level {
            Level::Minute => self.minute,
            Level::Hour => self.hour,
            Level::Day => self.day,
            Level::Month => self.month,
        }
    }

    /// Whether `level` still holds data from `from_ms` at `now_ms`.
    pub fn covers(&self, level: Level, from_ms: i64, now_ms: i64) -> bool {
        let days = self.days(level);
        days <= 0.0 || from_ms >= now_ms - (days * 86_400_000.0) as i64
    }
}

/// What the plan depends on besides the query.
#[derive(Clone, Debug)]
pub struct PlanContext {
    pub from_ms: i64,
    pub to_ms: i64,
    /// Grafana's interval for the panel (ms); 0 when unknown.
    pub interval_ms: i64,
    pub now_ms: i64,
    pub retention: Retention,
    pub collections: CollectionNames,
}

/// Additive measures are summed by MongoDB; anything with a sketch is fetched
/// per bucket and merged in Rust.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Strategy {
    ServerGroup,
    FetchAndMerge,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub level: Level,
    pub collection: String,
    /// Fixed bucket length; `None` for calendar months.
    pub bucket_ms: Option<i64>,
    /// Aligned start (inclusive) and end (exclusive) of what is read.
    pub from_ms: i64,
    pub to_ms: i64,
    /// The panel's start as asked; its series begin at [`Plan::panel_start`].
    pub panel_from_ms: i64,
    pub strategy: Strategy,
    /// Which rows of the collection are read.
    pub filter: RowFilter,
    pub group_by: Vec<String>,
    /// Metrics whose sum/min/max/count are needed, in this order.
    pub metrics: Vec<String>,
    pub distinct: Vec<String>,
    pub quantiles: Vec<String>,
    pub top_k: Vec<String>,
    /// Largest K asked of each `top_k` attribute.
    pub top_k_sizes: Vec<usize>,
    /// Things the user should know (e.g. a level chosen for retention).
    pub notices: Vec<String>,
}

impl Plan {
    /// Start of the bucket holding `ms`.
    pub fn bucket_start(&self, ms: i64) -> i64 {
        bucket_start(self.bucket_ms, ms)
    }

    /// The start of the bucket holding the panel's start: where series begin
    /// (the read may start earlier, for moving windows).
    pub fn panel_start(&self) -> i64 {
        self.bucket_start(self.panel_from_ms)
    }

    pub fn bucket_end(&self, start: i64) -> i64 {
        match self.bucket_ms {
            Some(b) => start + b,
            None => Level::Month.bucket_end(start),
        }
    }

    /// Every bucket start from `from_ms` up to `to_ms`.
    pub fn buckets(&self) -> Vec<i64> {
        let mut out = Vec::new();
        let mut t = self.from_ms;
        while t < self.to_ms && out.len() < MAX_BUCKETS {
            out.push(t);
            t = self.bucket_end(t);
        }
        out
    }

    /// The same read from `from_ms` (a bucket start) on: what is left to read
    /// when the buckets before it are known.
    pub fn reading_from(&self, from_ms: i64) -> Plan {
        Plan {
            from_ms,
            ..self.clone()
        }
    }

    /// The same buckets `shift_ms` earlier: same level and bucket size, so a
    /// comparison lines up with the main series point for point (planning the
    /// earlier range afresh could pick another level).
    pub fn shifted(&self, shift_ms: i64) -> Plan {
        Plan {
            from_ms: self.bucket_start(self.from_ms - shift_ms),
            to_ms: self.to_ms - shift_ms,
            panel_from_ms: self.panel_from_ms - shift_ms,
            ..self.clone()
        }
    }
}

/// More points than any panel can show; a guard against a 1-minute bucket over years.
pub const MAX_BUCKETS: usize = 100_000;

/// Picks the level: the coarsest whose bucket fits the interval among the
/// levels whose retention still covers the range; else the finest that does.
pub fn choose_level(q: &BuilderQuery, ctx: &PlanContext) -> (Level, Vec<String>) {
    use super::model::Granularity as G;
    let fixed = match q.granularity {
        G::Auto => None,
        G::Minute => Some(Level::Minute),
        G::Hour => Some(Level::Hour),
        G::Day => Some(Level::Day),
        G::Month => Some(Level::Month),
    };
    let covers = |l: Level| ctx.retention.covers(l, ctx.from_ms, ctx.now_ms);
    if let Some(level) = fixed {
        let mut notices = Vec::new();
        if !covers(level) {
            notices.push(format!(
                "{} rollups are kept {} days; buckets older than that are empty. Choose a coarser granularity or auto",
                level.name(),
                ctx.retention.days(level)
            ));
        }
        return (level, notices);
    }
    let covering: Vec<Level> = Level::ALL.into_iter().filter(|l| covers(*l)).collect();
    let fits = |l: Level| match l {
        // A month is only right for intervals of about a month.
        Level::Month => ctx.interval_ms >= 28 * 86_400_000,
        other => other.nominal_ms() <= ctx.interval_ms.max(1),
    };
    let chosen = covering
        .iter()
        .rev()
        .copied()
        .find(|l| fits(*l))
        .or_else(|| covering.first().copied())
        .unwrap_or(Level::Month);
    let mut notices = Vec::new();
    if !fits(chosen)
        || chosen != Level::Minute
            && !covers(Level::Minute)
            && chosen.nominal_ms() > ctx.interval_ms
    {
        notices.push(format!(
            "showing {} buckets: finer rollups are not kept that far back",
            chosen.name()
        ));
    }
    (chosen, notices)
}

pub fn plan(q: &BuilderQuery, ctx: &PlanContext) -> Result<Plan, ModelError> {
    if ctx.to_ms <= ctx.from_ms {
        return Err(ModelError::new("timeRange", "the time range is empty"));
    }
    // Grafana sends epoch milliseconds; anything beyond ±10,000 years is a mistake, and
    // would overflow the bucket arithmetic below.
    const LIMIT: i64 = 315_537_897_600_000;
    if ctx.from_ms.abs() > LIMIT
        || ctx.to_ms.abs() > LIMIT
        || !(0..=LIMIT).contains(&ctx.interval_ms)
    {
        return Err(ModelError::new(
            "timeRange",
            "times must be epoch milliseconds within ±10,000 years",
        ));
    }
    let (level, notices) = choose_level(q, ctx);
    let bucket_ms = match level {
        Level::Month => None,
        l => {
            let unit = l.nominal_ms();
            let fixed = q.granularity != super::model::Granularity::Auto;
            // Round the interval up to whole buckets of the level, so a panel
            // never gets more points than it asked for.
            let n = if fixed {
                1
            } else {
                ((ctx.interval_ms.max(unit) + unit - 1) / unit).max(1)
            };
            Some(n * unit)
        }
    };
    // A moving window needs the buckets before the range too.
    let window_ms = q
        .measures
        .iter()
        .filter_map(|m| m.window)
        .map(|w| w.minutes as i64 * 60_000)
        .max()
        .unwrap_or(0);
    let from = ctx.from_ms - window_ms;
    let from_ms = bucket_start(bucket_ms, from);
    let to_ms = ctx.to_ms;
    if let Some(b) = bucket_ms {
        if (to_ms - from_ms) / b > MAX_BUCKETS as i64 {
            return Err(ModelError::new(
                "granularity",
                format!(
                    "{} buckets of {} s is too many; choose a coarser granularity or auto",
                    (to_ms - from_ms) / b,
                    b / 1000
                ),
            ));
        }
        for (i, m) in q.measures.iter().enumerate() {
            if let Some(w) = m.window {
                let w_ms = w.minutes as i64 * 60_000;
                // Each bucket merges the window's buckets: bound the work a panel can ask for.
                if (w_ms / b).saturating_mul((to_ms - from_ms) / b) > 20_000_000 {
                    return Err(ModelError::new(
                        format!("measures[{i}].window.minutes"),
                        "this moving window over this many buckets is too much work: choose a coarser granularity or a shorter range",
                    ));
                }
                if w_ms % b != 0 {
                    return Err(ModelError::new(
                        format!("measures[{i}].window.minutes"),
                        format!("a {}-minute window is not a whole number of {}-second buckets; use a multiple of {} minutes or a finer granularity", w.minutes, b / 1000, (b / 60_000).max(1)),
                    ));
                }
            }
        }
    } else if q.measures.iter().any(|m| m.window.is_some()) {
        return Err(ModelError::new(
            "measures.window",
            "moving windows need minute, hour or day buckets, not months",
        ));
    }

    let mut metrics = Vec::new();
    let mut distinct = Vec::new();
    let mut quantiles = Vec::new();
    let mut top_k = Vec::new();
    let mut top_k_sizes: Vec<usize> = Vec::new();
    let push = |v: &mut Vec<String>, s: &str| {
        if !v.iter().any(|x| x == s) {
            v.push(s.to_string());
        }
    };
    for m in &q.measures {
        match &m.kind {
            MeasureKind::Count | MeasureKind::Rate => {}
            MeasureKind::Sum { metric }
            | MeasureKind::Avg { metric }
            | MeasureKind::Min { metric }
            | MeasureKind::Max { metric } => push(&mut metrics, metric),
            MeasureKind::Distinct { key } => push(&mut distinct, key),
            MeasureKind::Percentile { metric, .. } => push(&mut quantiles, metric),
            MeasureKind::Topk { attribute, k } => match top_k.iter().position(|a| a == attribute) {
                Some(i) => top_k_sizes[i] = top_k_sizes[i].max(*k),
                None => {
                    top_k.push(attribute.clone());
                    top_k_sizes.push(*k);
                }
            },
        }
    }
    for name in metrics
        .iter()
        .chain(&quantiles)
        .chain(&distinct)
        .chain(&top_k)
        .chain(&q.group_by)
    {
        if name.is_empty() || name.starts_with('$') || name.contains('.') {
            return Err(ModelError::new(
                "measures",
                format!("'{name}' is not a field name"),
            ));
        }
    }
    let strategy = if q.measures.iter().all(|m| m.kind.is_additive()) {
        Strategy::ServerGroup
    } else {
        Strategy::FetchAndMerge
    };
    let filter = row_filter(q)?;
    Ok(Plan {
        level,
        collection: level.collection(&ctx.collections).to_string(),
        bucket_ms,
        from_ms,
        to_ms,
        panel_from_ms: ctx.from_ms,
        strategy,
        filter,
        group_by: q.group_by.clone(),
        metrics,
        distinct,
        quantiles,
        top_k,
        top_k_sizes,
        notices,
    })
}

/// Start of the bucket holding `ms`, for fixed buckets or (`None`) calendar months.
fn bucket_start(bucket_ms: Option<i64>, ms: i64) -> i64 {
    match bucket_ms {
        Some(b) => ms.div_euclid(b) * b,
        None => Level::Month.bucket_start(ms),
    }
}

/// The earlier period a query compares itself with.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The main plan moved back by `shift_ms`.
    pub plan: Plan,
    pub shift_ms: i64,
    /// What its series are labelled with, e.g. `-1d`.
    pub label: String,
}

/// The comparison plan of a query with `compare`, from its main plan.
pub fn comparison(q: &BuilderQuery, main: &Plan) -> Result<Option<Comparison>, ModelError> {
    let Some(c) = &q.compare else {
        return Ok(None);
    };
    let shift_ms = parse_shift(&c.shift).map_err(|r| ModelError::new("compare.shift", r))?;
    Ok(Some(Comparison {
        plan: main.shifted(shift_ms),
        shift_ms,
        label: format!("-{}", c.shift.trim()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::testing::{builder, ctx, NOW};

    #[test]
    fn auto_level_follows_interval_and_retention() {
        let q = builder(serde_json::json!({"eventType": "page_view"}));
        let cases = [
            (3_600_000, 60_000, Level::Minute, Some(60_000)),
            (6 * 3_600_000, 300_000, Level::Minute, Some(300_000)),
            (86_400_000, 90_000, Level::Minute, Some(120_000)),
            (7 * 86_400_000, 3_600_000, Level::Hour, Some(3_600_000)),
            (90 * 86_400_000, 60_000, Level::Hour, Some(3_600_000)),
            (60 * 86_400_000, 7_200_000, Level::Hour, Some(7_200_000)),
            (400 * 86_400_000, 86_400_000, Level::Day, Some(86_400_000)),
            (3 * 365 * 86_400_000, 31 * 86_400_000, Level::Month, None),
        ];
        for (range, interval, level, bucket) in cases {
            let p = plan(&q, &ctx(range, interval)).unwrap();
            assert_eq!(
                (p.level, p.bucket_ms),
                (level, bucket),
                "range {range} interval {interval}"
            );
        }
    }

    #[test]
    fn the_range_is_aligned_and_reaches_back_for_windows() {
        let q = builder(serde_json::json!({
            "eventType": "page_view",
            "measures": [{"type": "count", "window": {"minutes": 10}}]
        }));
        let mut c = ctx(3_600_000, 300_000);
        c.from_ms += 90_000;
        let p = plan(&q, &c).unwrap();
        assert_eq!(p.bucket_ms, Some(300_000));
        assert_eq!(p.panel_start(), c.from_ms - 90_000);
        assert_eq!(
            p.from_ms,
            p.panel_start() - 600_000,
            "two buckets of window"
        );
        assert_eq!(p.to_ms, NOW);
        let buckets = p.buckets();
        assert_eq!(buckets.first(), Some(&p.from_ms));
        assert_eq!(buckets.len() as i64, (NOW - p.from_ms) / 300_000);
        assert!(buckets.windows(2).all(|w| w[1] - w[0] == 300_000));
    }

    #[test]
    fn month_buckets_follow_the_calendar() {
        let q = builder(serde_json::json!({"eventType": "page_view", "granularity": "month"}));
        let p = plan(&q, &ctx(70 * 86_400_000, 86_400_000)).unwrap();
        assert_eq!(p.bucket_ms, None);
        // From 2024-09-30: September to December 2024, each from its first day.
        let starts: Vec<i64> = p.buckets();
        assert_eq!(
            starts,
            [
                1_725_148_800_000,
                1_727_740_800_000,
                1_730_419_200_000,
                1_733_011_200_000
            ]
        );
        assert_eq!(p.bucket_end(starts[0]), starts[1]);
    }

    #[test]
    fn bad_ranges_and_windows_name_the_field() {
        let q = builder(serde_json::json!({"eventType": "page_view"}));
        let mut empty = ctx(0, 60_000);
        empty.to_ms = empty.from_ms;
        assert_eq!(plan(&q, &empty).unwrap_err().path, "timeRange");
        let windowed = builder(serde_json::json!({
            "eventType": "page_view",
            "measures": [{"type": "count", "window": {"minutes": 7}}]
        }));
        assert_eq!(
            plan(&windowed, &ctx(3_600_000, 300_000)).unwrap_err().path,
            "measures[0].window.minutes"
        );
    }

    #[test]
    fn a_comparison_is_the_same_buckets_earlier() {
        let q = builder(serde_json::json!({
            "eventType": "page_view",
            "compare": {"shift": "1d"}
        }));
        let mut c = ctx(3_600_000, 300_000);
        c.from_ms += 90_000;
        let main = plan(&q, &c).unwrap();
        let cmp = comparison(&q, &main).unwrap().unwrap();
        assert_eq!(cmp.shift_ms, 86_400_000);
        assert_eq!(cmp.label, "-1d");
        let earlier = &cmp.plan;
        assert_eq!(
            (earlier.level, earlier.bucket_ms),
            (main.level, main.bucket_ms)
        );
        assert_eq!(earlier.from_ms, main.from_ms - 86_400_000);
        assert_eq!(earlier.to_ms, main.to_ms - 86_400_000);
        assert_eq!(earlier.panel_start(), main.panel_start() - 86_400_000);
        assert_eq!(earlier.filter, main.filter);
        let none = builder(serde_json::json!({"eventType": "page_view"}));
        assert_eq!(comparison(&none, &main).unwrap(), None);
    }

    #[test]
    fn the_uncached_tail_is_a_plan_of_its_own() {
        let q = builder(serde_json::json!({"eventType": "page_view"}));
        let p = plan(&q, &ctx(3_600_000, 60_000)).unwrap();
        let tail = p.reading_from(p.from_ms + 30 * 60_000);
        assert_eq!(tail.from_ms, p.from_ms + 30 * 60_000);
        assert_eq!(tail.buckets().len(), 30);
        assert_eq!(
            Plan {
                from_ms: p.from_ms,
                ..tail
            },
            p
        );
    }
}
