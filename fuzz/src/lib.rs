//! The fuzz targets' entry functions: one per parser of outside input.
//!
//! In: any bytes, as a client, a dashboard author or an operator could send
//! them. Out: nothing; a finding is a panic (ours, or a failed invariant
//! below), an endless loop or a runaway allocation, which libFuzzer reports.
//!
//! Each function runs the library's real public functions in the order the
//! program runs them, so a crash here is a crash there. The same file is the
//! `mongopulse_fuzz` library of `fuzz/` (linked by `fuzz/fuzz_targets/*.rs`)
//! and a module of `tests/fuzz_regressions.rs` (through `#[path]`), which
//! replays `fuzz/corpus/` and `fuzz/regressions/` without a fuzzer: one copy of
//! the harness, two runners. It therefore uses only crates the main crate
//! depends on, and no libFuzzer API.

use std::path::Path;

use bson::{Bson, Document};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

use mongopulse::alerting::rules::{self, Condition, Rule, RuleConfig};
use mongopulse::daemon::Config;
use mongopulse::event::Event;
use mongopulse::ingest::{decode, parse_body, Format, Limits, Validator};
use mongopulse::live::ChannelQuery;
use mongopulse::query::filter::CompiledFilter;
use mongopulse::query::generate;
use mongopulse::query::model::{self, PipelineQuery, Query};
use mongopulse::query::pipeline::{allowed_collections, prepare};
use mongopulse::query::plan::{comparison, plan, PlanContext, Retention};
use mongopulse::store::CollectionNames;

/// A target's entry: any bytes in, a panic out if something is wrong.
pub type Entry = fn(&[u8]);

/// Every target: its name (the folder under `fuzz/corpus/` and
/// `fuzz/regressions/`, and the binary under `fuzz/fuzz_targets/`) and its entry.
pub const TARGETS: &[(&str, Entry)] = &[
    ("event_body", event_body),
    ("query_model", query_model),
    ("variable_query", variable_query),
    ("pipeline_check", pipeline_check),
    ("alert_rules", alert_rules),
    ("daemon_config", daemon_config),
];

/// The clock of every target: the seeds' events (from the tests) are from the
/// minute before, so they pass the retention and future checks. A fixed clock
/// keeps every finding reproducible.
fn now() -> DateTime<Utc> {
    match Utc.with_ymd_and_hms(2024, 12, 9, 14, 31, 0) {
        chrono::LocalResult::Single(t) => t,
        _ => unreachable!("a valid date"),
    }
}

/// `POST /v1/events` without the network: the body goes through
/// `Content-Encoding` (none, gzip, zstd), then is split as JSON and as NDJSON
/// (the two `Content-Type`s), then every item is validated, with the daemon's
/// default limits. Every input takes every path, so the corpus stays plain
/// files (JSON, NDJSON, a few .gz and .zst) rather than bytes behind a selector.
///
/// Invariants: every item is either an event or a refusal with a reason; an
/// accepted event becomes a BSON document that encodes, and reads back
/// (`Event::from_stored`, what recovery does) equal to itself.
pub fn event_body(data: &[u8]) {
    let validator = Validator {
        limits: Limits::default(),
        max_age: chrono::Duration::days(7),
    };
    let limit = validator.limits.max_body_bytes;
    for content_type in ["application/json", "application/x-ndjson; charset=utf-8"] {
        let Ok(format) = Format::from_content_type(Some(content_type)) else {
            panic!("{content_type} is a supported type");
        };
        for encoding in [None, Some("gzip"), Some("zstd")] {
            let Ok(raw) = decode::decompress(data, encoding, limit) else {
                continue;
            };
            assert!(raw.len() <= limit, "decompressed past the limit");
            check_body(&validator, &raw, format);
        }
    }
}

fn check_body(validator: &Validator, raw: &[u8], format: Format) {
    let items = match decode::split(raw, format, validator.limits.max_events_per_request) {
        Ok(items) => items.len(),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let parsed = match parse_body(validator, raw, format, now()) {
        Ok(p) => p,
        Err(e) => panic!("split accepted the body, parse_body refused it: {e}"),
    };
    assert_eq!(parsed.events.len() + parsed.rejected.len(), items);
    for (rejection, _) in &parsed.rejected {
        assert!(!rejection.reason.is_empty(), "{rejection:?}");
        assert!(rejection.index < items, "{rejection:?}");
    }
    for (_, event) in &parsed.events {
        let document = event.to_document("fuzz");
        let mut bytes = Vec::new();
        if let Err(e) = document.to_writer(&mut bytes) {
            panic!("an accepted event is no BSON document ({e}): {event:?}");
        }
        match Event::from_stored(&document) {
            Ok(back) => assert_eq!(&back, event, "the stored event reads back otherwise"),
            Err(e) => panic!("an accepted event does not read back ({e}): {event:?}"),
        }
    }
}

/// The contexts a panel query is planned in: a recent hour at Grafana's
/// minute interval, a month at one hour, and ten years at an unknown interval.
fn plan_contexts() -> Vec<PlanContext> {
    let now_ms = now().timestamp_millis();
    [
        (3_600_000, 60_000),
        (30 * 86_400_000, 3_600_000),
        (3_650 * 86_400_000, 0),
    ]
    .into_iter()
    .map(|(range_ms, interval_ms)| PlanContext {
        from_ms: now_ms - range_ms,
        to_ms: now_ms,
        interval_ms,
        now_ms,
        retention: Retention::default(),
        collections: CollectionNames::default(),
    })
    .collect()
}

/// A panel or alert query, as Grafana sends its JSON to QueryData: parsed by
/// the query model, then (builder) planned for a few time ranges, turned into
/// its aggregation pipeline, its comparison and its row filter, and made a
/// live channel; (pipeline) checked and expanded for a range.
///
/// Invariant: a builder query the model accepts is still the same query once
/// written out as JSON and parsed again (the frontend stores what it is given).
pub fn query_model(data: &[u8]) {
    let Ok(json) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let query = match model::parse(&json) {
        Ok(q) => q,
        Err(e) => {
            assert!(!e.reason.is_empty(), "{e:?}");
            return;
        }
    };
    match query {
        Query::Builder(b) => {
            let written = match serde_json::to_value(&b) {
                Ok(v) => v,
                Err(e) => panic!("an accepted builder query does not serialize: {e}"),
            };
            match model::parse(&written) {
                Ok(Query::Builder(again)) => assert_eq!(again, b, "{written}"),
                other => panic!("an accepted builder query reads back as {other:?}: {written}"),
            }
            for ctx in plan_contexts() {
                let Ok(p) = plan(&b, &ctx) else {
                    continue;
                };
                assert!(p.from_ms <= ctx.from_ms && p.to_ms == ctx.to_ms, "{p:?}");
                let stages = generate::pipeline(&p);
                assert!(!stages.is_empty());
                let _ = comparison(&b, &p);
                let _ = CompiledFilter::new(&p.filter);
            }
            if b.live {
                if let Ok(channel) = ChannelQuery::new(b, 15) {
                    let _ = channel.plan(now().timestamp_millis(), &CollectionNames::default());
                }
            }
        }
        Query::Pipeline(p) => {
            for ctx in plan_contexts() {
                if let Ok(stages) = prepare(
                    &p,
                    &ctx.collections,
                    ctx.from_ms,
                    ctx.to_ms,
                    ctx.interval_ms,
                ) {
                    assert_read_only(&stages, &ctx.collections);
                }
            }
        }
        Query::Variable(_) | Query::Annotations(_) | Query::Plugin(_) => {}
    }
}

/// A template variable's query, as the variable editor sends it (its JSON
/// without `mode`, which the frontend adds): parsed by the query model.
pub fn variable_query(data: &[u8]) {
    let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    map.insert("mode".into(), Value::from("variable"));
    match model::parse(&Value::Object(map)) {
        Ok(Query::Variable(_)) => {}
        Ok(other) => panic!("a variable query parsed as {other:?}"),
        Err(e) => assert!(!e.reason.is_empty(), "{e:?}"),
    }
}

/// The text of a raw pipeline (pipeline mode's editor) on `metrics_minutely`:
/// macros expanded and the read-only rules applied by `pipeline::prepare`.
///
/// Invariant: what `prepare` lets through holds no stage or operator that
/// writes or runs JavaScript, and reads no other collection, at any depth —
/// checked here by a walk of its own, not by the code under test.
pub fn pipeline_check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let names = CollectionNames::default();
    let query = PipelineQuery {
        collection: names.metrics_minutely.clone(),
        pipeline: text.to_string(),
        time_field: None,
        format: model::Format::Table,
    };
    let to_ms = now().timestamp_millis();
    match prepare(&query, &names, to_ms - 3_600_000, to_ms, 60_000) {
        Ok(stages) => assert_read_only(&stages, &names),
        Err(e) => assert!(!e.reason.is_empty(), "{e:?}"),
    }
}

/// Operators no pipeline query may hold (`docs/query-model.md`).
const WRITES_OR_JAVASCRIPT: &[&str] = &["$out", "$merge", "$function", "$accumulator", "$where"];

fn assert_read_only(stages: &[Document], names: &CollectionNames) {
    let allowed = allowed_collections(names);
    for stage in stages {
        walk(&Bson::Document(stage.clone()), &allowed);
    }
}

fn walk(value: &Bson, allowed: &[&str]) {
    match value {
        Bson::Document(d) => {
            for (key, inner) in d {
                assert!(
                    !WRITES_OR_JAVASCRIPT.contains(&key.as_str()),
                    "{key} passed the read-only check: {d}"
                );
                let read = match (key.as_str(), inner) {
                    ("$lookup" | "$graphLookup", Bson::Document(spec)) => spec.get("from"),
                    ("$unionWith", Bson::Document(spec)) => spec.get("coll"),
                    ("$unionWith", other) => Some(other),
                    _ => None,
                };
                match read {
                    None => {}
                    Some(Bson::String(c)) => {
                        assert!(allowed.contains(&c.as_str()), "{key} reads '{c}': {d}")
                    }
                    Some(other) => panic!("{key} reads {other}, not a collection of ours: {d}"),
                }
                walk(inner, allowed);
            }
        }
        Bson::Array(items) => items.iter().for_each(|i| walk(i, allowed)),
        _ => {}
    }
}

/// An alert rules file (`alerting.rules_file`), read as YAML and as TOML.
///
/// Invariants: an accepted rule has finite numbers in its condition (a NaN
/// threshold would never fire, silently), a window of at least a minute, and
/// reads back the same from its BSON document (how `alert_rules` stores rules).
pub fn alert_rules(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let known = ["ops".to_string(), "slack".to_string()];
    for file in ["rules.yaml", "rules.toml"] {
        match rules::parse_file(Path::new(file), text, &known) {
            Ok(accepted) => accepted.iter().for_each(|r| check_rule(r, &known)),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

fn check_rule(rule: &Rule, known: &[String]) {
    let numbers: Vec<f64> = match &rule.config.condition {
        Condition::Above { threshold } | Condition::Below { threshold } => vec![*threshold],
        Condition::Equal { value, tolerance } => vec![*value, *tolerance],
        Condition::Change { percent } => vec![*percent],
        Condition::Absent { minutes } => vec![f64::from(*minutes)],
        Condition::Anomaly { sigmas, .. } => vec![*sigmas],
    };
    assert!(
        numbers.iter().all(|n| n.is_finite()),
        "rule '{}' was accepted with the condition {:?}",
        rule.config.id,
        rule.config.condition
    );
    assert!(rule.window.as_secs() >= 60, "{rule:?}");
    let document = match bson::to_document(&rule.config) {
        Ok(d) => d,
        Err(e) => panic!("rule '{}' has no BSON form: {e}", rule.config.id),
    };
    let back: RuleConfig = match bson::from_document(document.clone()) {
        Ok(c) => c,
        Err(e) => panic!(
            "rule '{}' does not read back ({e}): {document}",
            rule.config.id
        ),
    };
    assert_eq!(back, rule.config, "{document}");
    if let Err(e) = Rule::check(back, "collection", known) {
        panic!("rule '{}' is refused once stored: {e}", rule.config.id);
    }
}

/// The daemon's TOML configuration file (defaults, then the file; no
/// environment), checked as at start.
///
/// Invariant: what `print-config` prints for an accepted configuration is
/// TOML again.
pub fn daemon_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_str(text) {
        Ok(config) => {
            let printed = config.to_redacted_toml();
            if let Err(e) = printed.parse::<toml::Table>() {
                panic!("print-config wrote no TOML ({e}):\n{printed}");
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}
