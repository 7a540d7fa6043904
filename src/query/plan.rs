//! Query planning, a pure function: builder query + time range + Grafana's
//! interval → which rollup level to read, the bucket size, and the
//! aggregation pipeline. Golden files (`tests/fixtures/pipelines/`) pin the
//! output for the shared query fixtures.

use bson::{doc, Bson, Document};
use serde::{Deserialize, Serialize};

use super::model::{BuilderQuery, FilterOp, MeasureKind, ModelError};
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
    pub strategy: Strategy,
    pub group_by: Vec<String>,
    /// Metrics whose sum/min/max/count are needed, in this order.
    pub metrics: Vec<String>,
    pub distinct: Vec<String>,
    pub quantiles: Vec<String>,
    pub top_k: Vec<String>,
    /// Largest K asked of each `top_k` attribute.
    pub top_k_sizes: Vec<usize>,
    pub pipeline: Vec<Document>,
    /// Things the user should know (e.g. a level chosen for retention).
    pub notices: Vec<String>,
}

impl Plan {
    /// Start of the bucket holding `ms`.
    pub fn bucket_start(&self, ms: i64) -> i64 {
        match self.bucket_ms {
            Some(b) => ms.div_euclid(b) * b,
            None => Level::Month.bucket_start(ms),
        }
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
    let from_ms = match bucket_ms {
        Some(b) => from.div_euclid(b) * b,
        None => Level::Month.bucket_start(from),
    };
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

    let mut filter = doc! {
        "spec": &q.spec,
        "timestamp": { "$gte": bson::DateTime::from_millis(from_ms), "$lt": bson::DateTime::from_millis(to_ms) },
    };
    if q.event_type != "*" {
        filter.insert("dimensions.eventType", q.event_type.as_str());
    }
    let mut conditions: Vec<(String, Bson)> = Vec::new();
    for (i, f) in q.filters.iter().enumerate() {
        let values = expand_values(&f.values);
        let field = format!("dimensions.{}", f.dimension);
        if f.dimension.starts_with('$') || f.dimension.contains('.') {
            return Err(ModelError::new(
                format!("filters[{i}].dimension"),
                format!("'{}' is not a dimension name", f.dimension),
            ));
        }
        let cond = match (f.op, values.as_slice()) {
            (FilterOp::Eq, [one]) => Bson::String(one.clone()),
            (FilterOp::Neq, [one]) => Bson::Document(doc! { "$ne": one }),
            (FilterOp::Eq | FilterOp::In, many) => Bson::Document(doc! { "$in": many.to_vec() }),
            (FilterOp::Neq | FilterOp::Nin, many) => Bson::Document(doc! { "$nin": many.to_vec() }),
            (FilterOp::Prefix, [one]) => {
                Bson::Document(doc! { "$regex": format!("^{}", escape_regex(one)) })
            }
            (FilterOp::Prefix, _) => {
                return Err(ModelError::new(
                    format!("filters[{i}].values"),
                    "prefix takes one value",
                ))
            }
        };
        conditions.push((field, cond));
    }
    for (i, a) in q.adhoc_filters.iter().enumerate() {
        let field = format!("dimensions.{}", a.key);
        let cond = match a.operator.as_str() {
            "=" => Bson::String(a.value.clone()),
            "!=" => Bson::Document(doc! { "$ne": &a.value }),
            "=~" => Bson::Document(doc! { "$regex": &a.value }),
            "!~" => Bson::Document(doc! { "$not": { "$regex": &a.value } }),
            other => {
                return Err(ModelError::new(
                    format!("adhocFilters[{i}].operator"),
                    format!("operator '{other}' is not supported; use =, !=, =~ or !~"),
                ))
            }
        };
        conditions.push((field, cond));
    }
    // Two conditions on one dimension must both hold: combine them with $and.
    let mut and = Vec::new();
    for (field, cond) in conditions {
        if filter.contains_key(&field) {
            and.push(Bson::Document(doc! { field: cond }));
        } else {
            filter.insert(field, cond);
        }
    }
    if !and.is_empty() {
        filter.insert("$and", and);
    }

    let time_expr: Bson = match (level, bucket_ms) {
        (Level::Minute, Some(60_000))
        | (Level::Hour, Some(3_600_000))
        | (Level::Day, Some(86_400_000))
        | (_, None) => Bson::String("$timestamp".into()),
        (_, Some(b)) => Bson::Document(doc! {
            "$subtract": [
                "$timestamp",
                { "$mod": [ { "$subtract": [ "$timestamp", bson::DateTime::from_millis(0) ] }, b ] }
            ]
        }),
    };
    let mut pipeline = vec![doc! { "$match": filter }];
    match strategy {
        Strategy::ServerGroup => {
            let mut id = doc! { "t": time_expr };
            for (i, g) in q.group_by.iter().enumerate() {
                id.insert(format!("g{i}"), format!("$dimensions.{g}"));
            }
            // `final` false if any rollup in the bucket is still partial (for the cache).
            let mut group = doc! { "_id": id, "count": { "$sum": "$metrics.count" }, "final": { "$min": "$final" } };
            for (i, m) in metrics.iter().enumerate() {
                group.insert(
                    format!("sum{i}"),
                    doc! { "$sum": format!("$metrics.{m}.sum") },
                );
                group.insert(
                    format!("n{i}"),
                    doc! { "$sum": format!("$metrics.{m}.count") },
                );
                group.insert(
                    format!("min{i}"),
                    doc! { "$min": format!("$metrics.{m}.min") },
                );
                group.insert(
                    format!("max{i}"),
                    doc! { "$max": format!("$metrics.{m}.max") },
                );
            }
            pipeline.push(doc! { "$group": group });
            pipeline.push(doc! { "$sort": { "_id.t": 1 } });
        }
        Strategy::FetchAndMerge => {
            let mut project = doc! { "_id": 0, "timestamp": 1, "final": 1, "metrics.count": 1 };
            for g in &q.group_by {
                project.insert(format!("dimensions.{g}"), 1);
            }
            for m in &metrics {
                project.insert(format!("metrics.{m}"), 1);
            }
            for k in &distinct {
                project.insert(format!("sketches.distinct.{k}"), 1);
            }
            for m in &quantiles {
                project.insert(format!("sketches.quantiles.{m}"), 1);
            }
            for a in &top_k {
                project.insert(format!("sketches.topK.{a}"), 1);
            }
            pipeline.push(doc! { "$project": project });
        }
    }
    Ok(Plan {
        level,
        collection: level.collection(&ctx.collections).to_string(),
        bucket_ms,
        from_ms,
        to_ms,
        strategy,
        group_by: q.group_by.clone(),
        metrics,
        distinct,
        quantiles,
        top_k,
        top_k_sizes,
        pipeline,
        notices,
    })
}

/// A value holding a JSON array (a multi-value variable formatted as
/// `${var:json}`) stands for all its items.
pub fn expand_values(values: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for v in values {
        match serde_json::from_str::<Vec<serde_json::Value>>(v) {
            Ok(items) if v.trim_start().starts_with('[') => {
                out.extend(items.into_iter().map(|i| match i {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                }))
            }
            _ => out.push(v.clone()),
        }
    }
    out.dedup();
    out
}

fn escape_regex(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The pipeline as relaxed extended JSON, for `executedQueryString`.
pub fn pipeline_text(collection: &str, pipeline: &[Document]) -> String {
    let stages: Vec<serde_json::Value> = pipeline
        .iter()
        .map(|d| Bson::Document(d.clone()).into_relaxed_extjson())
        .collect();
    format!(
        "db.{collection}.aggregate({})",
        serde_json::to_string_pretty(&stages).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::model::{parse, Query};

    const NOW: i64 = 1_733_756_400_000; // 2024-12-09T15:00:00Z

    fn ctx(range_ms: i64, interval_ms: i64) -> PlanContext {
        PlanContext {
            from_ms: NOW - range_ms,
            to_ms: NOW,
            interval_ms,
            now_ms: NOW,
            retention: Retention::default(),
            collections: CollectionNames::default(),
        }
    }

    fn builder(v: serde_json::Value) -> BuilderQuery {
        match parse(&v).unwrap() {
            Query::Builder(b) => b,
            _ => panic!(),
        }
    }

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
    fn golden_pipelines_for_the_shared_fixtures() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let update = std::env::var("UPDATE_GOLDEN").is_ok();
        let mut checked = 0;
        let mut entries: Vec<_> = std::fs::read_dir(root.join("tests/fixtures/queries"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let Query::Builder(q) = parse(&v).unwrap() else {
                continue;
            };
            let p = plan(&q, &ctx(6 * 3_600_000, 300_000)).unwrap();
            let got = serde_json::json!({
                "level": p.level.name(),
                "collection": p.collection,
                "bucketMs": p.bucket_ms,
                "strategy": p.strategy,
                "pipeline": p.pipeline.iter().map(|d| Bson::Document(d.clone()).into_relaxed_extjson()).collect::<Vec<_>>(),
            });
            let golden = root
                .join("tests/fixtures/pipelines")
                .join(path.file_name().unwrap());
            if update {
                std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
                std::fs::write(&golden, serde_json::to_string_pretty(&got).unwrap() + "\n")
                    .unwrap();
            }
            let want: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&golden).unwrap_or_else(|_| {
                    panic!(
                        "{} missing; run with UPDATE_GOLDEN=1 and review it",
                        golden.display()
                    )
                }))
                .unwrap();
            assert_eq!(
                got,
                want,
                "{} changed; if intended, run with UPDATE_GOLDEN=1 and review the diff",
                golden.display()
            );
            checked += 1;
        }
        assert!(checked >= 4);
    }

    #[test]
    fn filters_become_index_friendly_matches() {
        let q = builder(serde_json::json!({
            "eventType": "page_view",
            "filters": [
                {"dimension": "country", "op": "eq", "values": ["[\"FR\",\"DE\"]"]},
                {"dimension": "browser", "op": "prefix", "values": ["Chr.me"]},
                {"dimension": "country", "op": "neq", "values": ["US"]}
            ]
        }));
        let p = plan(&q, &ctx(3_600_000, 60_000)).unwrap();
        let m = p.pipeline[0].get_document("$match").unwrap();
        let keys: Vec<&String> = m.keys().collect();
        assert_eq!(
            keys[..3],
            ["spec", "timestamp", "dimensions.eventType"],
            "the index prefix comes first"
        );
        assert_eq!(
            m.get_document("dimensions.country")
                .unwrap()
                .get_array("$in")
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            m.get_document("dimensions.browser")
                .unwrap()
                .get_str("$regex")
                .unwrap(),
            "^Chr\\.me"
        );
        assert_eq!(m.get_array("$and").unwrap().len(), 1);
    }
}
