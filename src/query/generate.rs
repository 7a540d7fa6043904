//! Pipeline generation, a pure function. In: a [`Plan`]. Out: the MongoDB
//! aggregation pipeline that reads exactly the plan's rows and range — a
//! `$match` that leads with the index prefix (spec, timestamp, event type),
//! then either a server-side `$group` per bucket and group (additive measures)
//! or a `$project` of what each rollup document contributes (sketches). The
//! pipeline is final: what runs is what this writes. Golden files
//! (`tests/fixtures/pipelines/`) pin it for the shared query fixtures.

use bson::{doc, Bson, Document};

use super::filter::{Condition, Test};
use super::plan::{Plan, Strategy};
use crate::rollup::Level;

/// The whole pipeline of a plan.
pub fn pipeline(plan: &Plan) -> Vec<Document> {
    let mut stages = vec![match_stage(plan)];
    match plan.strategy {
        Strategy::ServerGroup => {
            stages.push(group_stage(plan));
            stages.push(doc! { "$sort": { "_id.t": 1 } });
        }
        Strategy::FetchAndMerge => stages.push(project_stage(plan)),
    }
    stages
}

/// The `$match` of the plan's rows over its range: all a live channel loads.
pub fn match_stage(plan: &Plan) -> Document {
    let f = &plan.filter;
    let mut filter = doc! {
        "spec": &f.spec,
        "timestamp": {
            "$gte": bson::DateTime::from_millis(plan.from_ms),
            "$lt": bson::DateTime::from_millis(plan.to_ms),
        },
    };
    if let Some(event_type) = &f.event_type {
        filter.insert("dimensions.eventType", event_type.as_str());
    }
    // Two conditions on one dimension must both hold: combine them with $and.
    let mut and = Vec::new();
    for c in &f.conditions {
        let field = format!("dimensions.{}", c.dimension);
        let cond = condition(c);
        if filter.contains_key(&field) {
            and.push(Bson::Document(doc! { field: cond }));
        } else {
            filter.insert(field, cond);
        }
    }
    if !and.is_empty() {
        filter.insert("$and", and);
    }
    doc! { "$match": filter }
}

/// A condition as MongoDB writes it; `filter::CompiledFilter` gives each the same meaning.
fn condition(c: &Condition) -> Bson {
    match &c.test {
        Test::Is(v) => Bson::String(v.clone()),
        Test::IsNot(v) => Bson::Document(doc! { "$ne": v }),
        Test::OneOf(vs) => Bson::Document(doc! { "$in": vs.clone() }),
        Test::NoneOf(vs) => Bson::Document(doc! { "$nin": vs.clone() }),
        Test::Prefix(p) => Bson::Document(doc! { "$regex": format!("^{}", escape_regex(p)) }),
        Test::Regex(p) => Bson::Document(doc! { "$regex": p }),
        Test::NotRegex(p) => Bson::Document(doc! { "$not": { "$regex": p } }),
    }
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

/// The bucket a rollup's timestamp falls in: the timestamp itself when the
/// level's own bucket is the plan's, else the timestamp rounded down.
fn bucket_expr(plan: &Plan) -> Bson {
    match (plan.level, plan.bucket_ms) {
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
    }
}

fn group_stage(plan: &Plan) -> Document {
    let mut id = doc! { "t": bucket_expr(plan) };
    for (i, g) in plan.group_by.iter().enumerate() {
        id.insert(format!("g{i}"), format!("$dimensions.{g}"));
    }
    // `final` false if any rollup in the bucket is still partial (for the cache).
    let mut group =
        doc! { "_id": id, "count": { "$sum": "$metrics.count" }, "final": { "$min": "$final" } };
    // Per metric: Σ sum, Σ count, min, max, named with the metric's index.
    let parts = [
        ("sum", "$sum", "sum"),
        ("n", "$sum", "count"),
        ("min", "$min", "min"),
        ("max", "$max", "max"),
    ];
    for (i, m) in plan.metrics.iter().enumerate() {
        for (name, op, field) in parts {
            group.insert(
                format!("{name}{i}"),
                doc! { op: format!("$metrics.{m}.{field}") },
            );
        }
    }
    doc! { "$group": group }
}

fn project_stage(plan: &Plan) -> Document {
    let mut project = doc! { "_id": 0, "timestamp": 1, "final": 1, "metrics.count": 1 };
    for g in &plan.group_by {
        project.insert(format!("dimensions.{g}"), 1);
    }
    for m in &plan.metrics {
        project.insert(format!("metrics.{m}"), 1);
    }
    for k in &plan.distinct {
        project.insert(format!("sketches.distinct.{k}"), 1);
    }
    for m in &plan.quantiles {
        project.insert(format!("sketches.quantiles.{m}"), 1);
    }
    for a in &plan.top_k {
        project.insert(format!("sketches.topK.{a}"), 1);
    }
    doc! { "$project": project }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::model::{parse, Query};
    use crate::query::plan::plan;
    use crate::query::testing::{builder, ctx};

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
                "pipeline": pipeline(&p).into_iter().map(|d| Bson::Document(d).into_relaxed_extjson()).collect::<Vec<_>>(),
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
        let stage = match_stage(&p);
        let m = stage.get_document("$match").unwrap();
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
        assert_eq!(pipeline(&p)[0], stage);
    }

    #[test]
    fn adhoc_regexes_are_written_unanchored() {
        let q = builder(serde_json::json!({
            "eventType": "page_view",
            "adhocFilters": [
                {"key": "country", "operator": "=~", "value": "D|US"},
                {"key": "browser", "operator": "!~", "value": "^Fire"}
            ]
        }));
        let p = plan(&q, &ctx(3_600_000, 60_000)).unwrap();
        let stage = match_stage(&p);
        let m = stage.get_document("$match").unwrap();
        assert_eq!(
            m.get("dimensions.country"),
            Some(&Bson::Document(doc! { "$regex": "D|US" }))
        );
        assert_eq!(
            m.get("dimensions.browser"),
            Some(&Bson::Document(doc! { "$not": { "$regex": "^Fire" } }))
        );
    }

    #[test]
    fn the_range_read_is_the_plans() {
        let q = builder(serde_json::json!({"eventType": "page_view", "compare": {"shift": "1h"}}));
        let p = plan(&q, &ctx(3_600_000, 60_000)).unwrap();
        let range = |p: &Plan| {
            let stage = match_stage(p);
            let ts = stage
                .get_document("$match")
                .unwrap()
                .get_document("timestamp")
                .unwrap()
                .clone();
            (
                ts.get_datetime("$gte").unwrap().timestamp_millis(),
                ts.get_datetime("$lt").unwrap().timestamp_millis(),
            )
        };
        assert_eq!(range(&p), (p.from_ms, p.to_ms));
        let tail = p.reading_from(p.from_ms + 600_000);
        assert_eq!(range(&tail), (p.from_ms + 600_000, p.to_ms));
        let earlier = crate::query::plan::comparison(&q, &p)
            .unwrap()
            .unwrap()
            .plan;
        assert_eq!(
            range(&earlier),
            (p.from_ms - 3_600_000, p.to_ms - 3_600_000)
        );
    }

    #[test]
    fn coarser_buckets_round_the_timestamp_down() {
        let q = builder(serde_json::json!({"eventType": "page_view", "groupBy": ["country"]}));
        let group_id = |range_ms: i64, interval_ms: i64| {
            let p = plan(&q, &ctx(range_ms, interval_ms)).unwrap();
            pipeline(&p)[1]
                .get_document("$group")
                .unwrap()
                .get_document("_id")
                .unwrap()
                .clone()
        };
        let five_minutes = group_id(6 * 3_600_000, 300_000);
        assert!(five_minutes
            .get_document("t")
            .unwrap()
            .contains_key("$subtract"));
        assert_eq!(five_minutes.get_str("g0").unwrap(), "$dimensions.country");
        let minute = group_id(3_600_000, 60_000);
        assert_eq!(minute.get_str("t").unwrap(), "$timestamp");
    }
}
