//! Golden tests of the window logic: `tests/rollups/inputs/*.jsonl` (events in
//! arrival order) → the documents the engine writes, compared with
//! `tests/rollups/expected/*.json`, which `tests/rollups/make_expected.py`
//! computes from the raw events in plain Python. Exact for counts, sums,
//! minima, maxima and top-K; within the stated sketch errors for distinct
//! counts and quantiles. Also: hours equal the merge of their minutes.

use std::collections::BTreeMap;
use std::path::Path;

use bson::{Bson, Document};
use chrono::{TimeZone, Utc};
use mongopulse::ingest::{Limits, Validator};
use mongopulse::rollup::aggregate::Aggregate;
use mongopulse::rollup::sessions::Sessions;
use mongopulse::rollup::sketch::HLL_LG_K;
use mongopulse::rollup::spec::{Spec, SpecConfig};
use mongopulse::rollup::windows::Windows;
use mongopulse::rollup::Level;
use serde_json::Value;

/// HyperLogLog at lgK 12: relative standard error 1.63 %; allow three of them.
const HLL_TOLERANCE: f64 = 3.0 * 1.04 / 64.0;
const QUANTILE_ERROR: f64 = 0.01;

struct Run {
    /// Last document written per `_id`, by collection ("minute"…"month", "sessions").
    docs: BTreeMap<String, BTreeMap<String, Document>>,
    late: Vec<usize>,
}

fn run(path: &Path, lateness_secs: i64, gap_secs: i64) -> Run {
    let spec = Spec::new(&SpecConfig::default()).unwrap();
    // Idle finalization (60 s past the lateness) never overtakes the event-driven
    // watermark while events flow; it closes everything once "now" moves on at the end.
    let mut windows = Windows::new(vec![spec], "golden", lateness_secs * 1000, 60_000, i64::MIN);
    windows.sessions = Some(Sessions::new(0, gap_secs * 1000, i64::MIN));
    let validator = Validator {
        limits: Limits::default(),
        max_age: chrono::Duration::days(36_500),
    };
    let text = std::fs::read_to_string(path).unwrap();
    let mut run = Run {
        docs: BTreeMap::new(),
        late: Vec::new(),
    };
    let mut newest = i64::MIN;
    let collect = |w: &mut Windows, now: i64, run: &mut Run| {
        let batch = w.flush(now);
        for p in batch.rollups.iter() {
            let id = p.doc.get_str("_id").unwrap().to_string();
            run.docs
                .entry(p.level.name().to_string())
                .or_default()
                .insert(id, p.doc.to_document().unwrap());
        }
        for p in batch.sessions.iter() {
            let id = p.doc.get_str("_id").unwrap().to_string();
            run.docs
                .entry("sessions".into())
                .or_default()
                .insert(id, p.doc.to_document().unwrap());
        }
        w.commit(&batch);
    };
    for (i, line) in text.lines().enumerate() {
        let ms = chrono::DateTime::parse_from_rfc3339(
            serde_json::from_str::<Value>(line).unwrap()["timestamp"]
                .as_str()
                .unwrap(),
        )
        .unwrap()
        .timestamp_millis();
        newest = newest.max(ms);
        let now = Utc.timestamp_millis_opt(newest).unwrap();
        let event = validator.event(i, line.as_bytes(), now).unwrap();
        windows.advance(newest);
        if windows.admit(ms).is_err() {
            run.late.push(i);
            continue;
        }
        windows.record(&event);
        // Flush now and then, as the daemon does every second.
        if i % 17 == 0 {
            collect(&mut windows, newest, &mut run);
        }
    }
    // Long after: everything closes.
    windows.advance(newest + 40 * 86_400_000);
    collect(&mut windows, newest, &mut run);
    windows.advance(newest + 80 * 86_400_000);
    collect(&mut windows, newest, &mut run);
    run
}

fn key(d: &Document) -> (i64, String) {
    let dims = d.get_document("dimensions").unwrap();
    let mut m = BTreeMap::new();
    for (k, v) in dims {
        m.insert(
            k.clone(),
            match v {
                Bson::String(s) => Value::from(s.as_str()),
                _ => Value::Null,
            },
        );
    }
    (
        d.get_datetime("timestamp").unwrap().timestamp_millis(),
        serde_json::to_string(&m).unwrap(),
    )
}

fn expected_key(e: &Value) -> (i64, String) {
    let ms = chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    let dims: BTreeMap<String, Value> = serde_json::from_value(e["dimensions"].clone()).unwrap();
    (ms, serde_json::to_string(&dims).unwrap())
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn compare_rollups(name: &str, level: &str, got: &BTreeMap<String, Document>, expected: &[Value]) {
    let spec = Spec::new(&SpecConfig::default()).unwrap();
    let by_key: BTreeMap<(i64, String), &Document> = got.values().map(|d| (key(d), d)).collect();
    let keys: Vec<_> = by_key.keys().cloned().collect();
    let mut expected_keys: Vec<_> = expected.iter().map(expected_key).collect();
    expected_keys.sort();
    assert_eq!(
        keys, expected_keys,
        "{name}: {level} buckets differ (empty windows must have no document)"
    );
    for e in expected {
        let d = by_key[&expected_key(e)];
        let at = format!("{name} {level} {}", e["timestamp"]);
        assert!(d.get_bool("final").unwrap(), "{at}: not final");
        let metrics = d.get_document("metrics").unwrap();
        assert_eq!(
            metrics.get_i64("count").unwrap(),
            e["count"].as_i64().unwrap(),
            "{at}: count"
        );
        for (m, stats) in e["metrics"].as_object().unwrap() {
            let got = metrics.get_document(m).unwrap();
            for f in ["sum", "min", "max"] {
                assert!(
                    close(got.get_f64(f).unwrap(), stats[f].as_f64().unwrap()),
                    "{at}: {m}.{f} {} vs {}",
                    got.get_f64(f).unwrap(),
                    stats[f]
                );
            }
            assert_eq!(
                got.get_i64("count").unwrap(),
                stats["count"].as_i64().unwrap(),
                "{at}: {m}.count"
            );
        }
        let agg = Aggregate::from_document(&spec, d).unwrap();
        for (i, k) in spec.distinct.iter().enumerate() {
            let exact = e["distinct"][k].as_f64().unwrap();
            let est = agg.distinct[i].estimate();
            assert!(
                (est - exact).abs() <= HLL_TOLERANCE * exact + 0.5,
                "{at}: distinct {k} {est} vs {exact}"
            );
        }
        for (i, m) in spec.quantiles.iter().enumerate() {
            let Some(qs) = e["quantiles"].get(m) else {
                continue;
            };
            for (q, exact) in qs.as_object().unwrap() {
                let exact = exact.as_f64().unwrap();
                let est = agg.quantiles[i].quantile(q.parse().unwrap()).unwrap();
                assert!(
                    (est - exact).abs() <= QUANTILE_ERROR * exact + 1e-9,
                    "{at}: {m} q{q} {est} vs {exact}"
                );
            }
        }
        let top: Vec<Value> = d
            .get_document("topK")
            .unwrap()
            .get_array("landingPage")
            .unwrap()
            .iter()
            .map(|r| {
                let r = r.as_document().unwrap();
                serde_json::json!([r.get_str("value").unwrap(), r.get_i64("count").unwrap()])
            })
            .collect();
        assert_eq!(
            Value::Array(top),
            e["topK"]["landingPage"],
            "{at}: top pages"
        );
    }
}

fn compare_sessions(name: &str, got: &BTreeMap<String, Document>, expected: &[Value]) {
    let by_key: BTreeMap<(i64, String), &Document> = got.values().map(|d| (key(d), d)).collect();
    let mut expected_keys: Vec<_> = expected.iter().map(expected_key).collect();
    expected_keys.sort();
    assert_eq!(
        by_key.keys().cloned().collect::<Vec<_>>(),
        expected_keys,
        "{name}: session buckets"
    );
    for e in expected {
        let d = by_key[&expected_key(e)];
        for f in ["sessions", "durationMsSum", "events", "bounces"] {
            assert_eq!(
                d.get_i64(f).unwrap(),
                e[f].as_i64().unwrap(),
                "{name} sessions {} {f}",
                e["timestamp"]
            );
        }
        assert!(d.get_bool("final").unwrap());
    }
}

#[test]
fn golden_inputs_match_independently_computed_rollups() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rollups");
    let mut inputs: Vec<_> = std::fs::read_dir(dir.join("inputs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 5);
    for input in inputs {
        let name = input.file_stem().unwrap().to_string_lossy().to_string();
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("expected/{name}.json"))).unwrap(),
        )
        .unwrap();
        let run = run(
            &input,
            expected["lateness_secs"].as_i64().unwrap(),
            expected["gap_secs"].as_i64().unwrap(),
        );
        let late: Vec<usize> = expected["late"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(run.late, late, "{name}: late events");
        let empty = BTreeMap::new();
        for level in ["minute", "hour", "day", "month"] {
            compare_rollups(
                &name,
                level,
                run.docs.get(level).unwrap_or(&empty),
                expected[level].as_array().unwrap(),
            );
        }
        compare_sessions(
            &name,
            run.docs.get("sessions").unwrap_or(&empty),
            expected["sessions"].as_array().unwrap(),
        );
    }
}

#[test]
fn hour_equals_the_merge_of_its_minutes() {
    // 30,000 events in one hour from 8,000 users: HLL well past its exact range.
    let spec = Spec::new(&SpecConfig {
        dimensions: vec!["eventType".into()],
        ..SpecConfig::default()
    })
    .unwrap();
    let mut windows = Windows::new(vec![spec.clone()], "merge", 0, 0, i64::MIN);
    let validator = Validator {
        limits: Limits::default(),
        max_age: chrono::Duration::days(36_500),
    };
    let t0 = 1_733_752_800_000i64; // 2024-12-09T14:00:00Z
    let mut users = std::collections::HashSet::new();
    let mut minutes: Vec<Document> = Vec::new();
    let mut hours: Vec<Document> = Vec::new();
    for i in 0..30_000i64 {
        let ms = t0 + i * 120; // one hour
        let user = format!("user-{}", (i * 7919) % 8000);
        users.insert(user.clone());
        let line = format!(
            r#"{{"timestamp": {ms}, "metadata": {{"eventType": "page_view", "dimensions": {{"userId": "{user}", "sessionId": "s{}"}}}}, "metrics": {{"pageLoadTime": {}}}}}"#,
            i % 977,
            100 + (i * 37) % 5000
        );
        let e = validator
            .event(0, line.as_bytes(), Utc.timestamp_millis_opt(ms).unwrap())
            .unwrap();
        windows.record(&e);
        if i % 500 == 0 {
            windows.advance(ms);
            let b = windows.flush(ms);
            for p in &b.rollups {
                match p.level {
                    Level::Minute if p.is_final => minutes.push(p.doc.to_document().unwrap()),
                    Level::Hour if p.is_final => hours.push(p.doc.to_document().unwrap()),
                    _ => {}
                }
            }
            windows.commit(&b);
        }
    }
    windows.advance(t0 + 2 * 3_600_000);
    let b = windows.flush(0);
    for p in &b.rollups {
        match p.level {
            Level::Minute if p.is_final => minutes.push(p.doc.to_document().unwrap()),
            Level::Hour if p.is_final => hours.push(p.doc.to_document().unwrap()),
            _ => {}
        }
    }
    assert_eq!(minutes.len(), 60);
    assert_eq!(hours.len(), 1);
    let mut merged = Aggregate::new(&spec);
    for m in &minutes {
        merged.merge(&Aggregate::from_document(&spec, m).unwrap());
    }
    let hour = Aggregate::from_document(&spec, &hours[0]).unwrap();
    assert_eq!(hour.count, merged.count);
    assert_eq!(hour.count, 30_000);
    let (h, m) = (&hour.metrics[0].1, &merged.metrics[0].1);
    assert_eq!(
        (h.sum, h.min, h.max, h.count),
        (m.sum, m.min, m.max, m.count)
    );
    let exact = users.len() as f64;
    let est = hour.distinct[0].estimate();
    assert!(
        (est - exact).abs() <= HLL_TOLERANCE * exact,
        "distinct users {est} vs exact {exact}"
    );
    assert_eq!(HLL_LG_K, 12);
}
