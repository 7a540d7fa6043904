//! Hostile input, black-box (issue 16, deliverable 5): the real daemon over
//! HTTP and the real plugin over Grafana's gRPC protocol, on the test MongoDB.
//!
//! Each hostile request must get a clear 4xx (or a query error) saying what
//! was wrong and what to do, and nothing else may be affected: the daemon
//! stays up without a panic, a normal batch afterwards is stored and counted
//! exactly, and the data source still answers a normal query. One client
//! flooding new dimension values is bounded by `rollups.max_open_tuples`
//! while another client's events of open tuples keep being accepted.

mod support;

use std::io::Write;
use std::time::Instant;

use bson::doc;
use chrono::Utc;
use serde_json::{json, Value};
use support::daemon::{seed_event, Daemon, API_KEY};
use support::frames::by_ref;
use support::mongo::TestMongo;
use support::plugin_harness::{DataSource, PluginProcess};
use support::recount::{all, wait_until_rollups_match};

const ENV: [(&str, &str); 2] = [
    ("MONGOPULSE__ROLLUPS__FLUSH_INTERVAL_MS", "200"),
    ("MONGOPULSE__INGEST__WRITER__MAX_BATCH_DELAY_MS", "10"),
];

/// Small, so the oversized bodies and bombs stay small to build and send.
const SMALL_BODY_LIMIT: (&str, &str) = ("MONGOPULSE__INGEST__LIMITS__MAX_BODY_BYTES", "65536");

const MINUTE: i64 = 60_000;

/// One hostile request and what its refusal must say.
struct Case {
    name: &'static str,
    body: Vec<u8>,
    headers: Vec<(&'static str, &'static str)>,
    status: u16,
    /// Every one of these words must be in the answer's text.
    words: &'static [&'static str],
}

fn json_case(
    name: &'static str,
    body: String,
    status: u16,
    words: &'static [&'static str],
) -> Case {
    Case {
        name,
        body: body.into_bytes(),
        headers: vec![("content-type", "application/json")],
        status,
        words,
    }
}

/// A valid event with `patch` merged into it (objects merged key by key).
fn event_with(patch: Value) -> Value {
    fn merge(into: &mut Value, patch: Value) {
        match (into, patch) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (slot, v) => *slot = v,
        }
    }
    let mut e = seed_event(999_999, Utc::now());
    merge(&mut e, patch);
    e
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
}

fn cases() -> Vec<Case> {
    let valid = event_with(json!({})).to_string();
    // 1 MiB of a JSON array of spaces: 16 times the limit once inflated.
    let inflated = format!("[{}]", " ".repeat(1 << 20));
    let mut out = vec![
        json_case(
            "oversized raw body",
            format!("[{}]", vec![valid.as_str(); 200].join(",")),
            413,
            &["65536", "bytes"],
        ),
        Case {
            name: "gzip bomb (1 MiB from ~1 KiB)",
            body: gzip(inflated.as_bytes()),
            headers: vec![
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            status: 413,
            words: &["65536", "bytes"],
        },
        Case {
            name: "zstd bomb (1 MiB from ~100 B)",
            body: zstd::encode_all(inflated.as_bytes(), 19).unwrap(),
            headers: vec![
                ("content-type", "application/json"),
                ("content-encoding", "zstd"),
            ],
            status: 413,
            words: &["65536", "bytes"],
        },
        Case {
            name: "corrupt gzip",
            body: b"\x1f\x8b\x08\x00garbage".to_vec(),
            headers: vec![
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            status: 400,
            words: &["gzip"],
        },
        json_case(
            "attributes nested 20 deep",
            event_with(json!({ "attributes": { "deep": serde_json::from_str::<Value>(&nested(20)).unwrap() } })).to_string(),
            422,
            &["attributes.deep", "deep"],
        ),
        json_case(
            "attributes nested 5,000 deep (past the JSON parser's recursion bound)",
            format!("[{}]", valid.replacen("\"attributes\":{", &format!("\"attributes\":{{\"deep\":{},", nested(5_000)), 1)),
            422,
            &["recursion", "128 levels"],
        ),
        json_case(
            "a dimension value that is an object",
            event_with(json!({ "metadata": { "dimensions": { "country": { "$gt": "" } } } })).to_string(),
            422,
            &["metadata.dimensions.country"],
        ),
        json_case(
            "NaN as a JSON token",
            format!("[{}]", valid.replacen("\"scrollDepth\":0.5", "\"scrollDepth\":NaN", 1)),
            400,
            &["not valid JSON", "no NaN or Infinity"],
        ),
        json_case(
            "Infinity as a JSON token",
            format!("[{}]", valid.replacen("\"scrollDepth\":0.5", "\"scrollDepth\":-Infinity", 1)),
            400,
            &["not valid JSON", "no NaN or Infinity"],
        ),
        json_case(
            "a number beyond f64 (1e999)",
            format!("[{}]", valid.replacen("\"scrollDepth\":0.5", "\"scrollDepth\":1e999", 1)),
            422,
            &["not valid JSON", "64-bit float"],
        ),
    ];
    for text in ["NaN", "Infinity", "-Infinity", "1e999"] {
        out.push(json_case(
            "a numeric metric sent as the string NaN/Infinity",
            event_with(json!({ "metrics": { "scrollDepth": text } })).to_string(),
            422,
            &["metrics.scrollDepth", "finite number"],
        ));
    }
    for (section, key) in [
        ("dimensions", "$where"),
        ("dimensions", "a.b"),
        ("dimensions", ""),
        ("metrics", "$inc"),
        ("metrics", "x.y"),
        ("metrics", ""),
        ("attributes", "$set"),
        ("attributes", "a.b"),
        ("attributes", ""),
    ] {
        let patch = if section == "dimensions" {
            json!({ "metadata": { "dimensions": { key: "v" } } })
        } else if section == "metrics" {
            json!({ "metrics": { key: 1 } })
        } else {
            json!({ "attributes": { key: "v" } })
        };
        out.push(json_case(
            "a key with '$', '.' or empty",
            event_with(patch).to_string(),
            422,
            &["not a usable field name", "must be non-empty"],
        ));
    }
    out.push(json_case(
        "a '$' key nested inside attributes",
        event_with(json!({ "attributes": { "a": { "b": { "$where": "1" } } } })).to_string(),
        422,
        &["attributes.a.b", "not a usable field name"],
    ));
    // Invalid UTF-8 inside a string, in a JSON array and on an NDJSON line.
    let mut bad_utf8 =
        format!("[{}]", valid.replacen("\"Paris\"", "\"Pa\u{1}ris\"", 1)).into_bytes();
    let at = bad_utf8.windows(2).position(|w| w == b"\x01r").unwrap();
    bad_utf8[at] = 0xff;
    out.push(Case {
        name: "invalid UTF-8 in a JSON array",
        body: bad_utf8.clone(),
        headers: vec![("content-type", "application/json")],
        status: 400,
        words: &["not valid JSON", "UTF-8"],
    });
    let mut line = bad_utf8[1..bad_utf8.len() - 1].to_vec();
    line.push(b'\n');
    out.push(Case {
        name: "invalid UTF-8 on an NDJSON line",
        body: line,
        headers: vec![("content-type", "application/x-ndjson")],
        status: 422,
        words: &["UTF-8"],
    });
    out
}

/// The answer as text: the error or every rejection's path and reason.
fn answer_text(body: &Value) -> String {
    let mut text = body["error"].as_str().unwrap_or("").to_string();
    for r in body["rejected"].as_array().into_iter().flatten() {
        text.push_str(&format!(
            " | {}: {}",
            r["path"].as_str().unwrap_or(""),
            r["reason"].as_str().unwrap_or("")
        ));
    }
    text
}

#[tokio::test]
async fn hostile_bodies_get_clear_refusals_and_nothing_else_is_affected() {
    let mongo = TestMongo::start().await;
    let mut env = ENV.to_vec();
    env.push(SMALL_BODY_LIMIT);
    let daemon = Daemon::start(&mongo, &env).await;

    let mut problems = Vec::new();
    let cases = cases();
    for case in &cases {
        let (status, body, _) = daemon.post(case.body.clone(), &case.headers).await;
        let text = answer_text(&body);
        println!(
            "{:<70} {status}  {}",
            case.name,
            &text[..text.len().min(160)]
        );
        if status != case.status || body["accepted"] != json!(0) {
            problems.push(format!(
                "{}: expected {} with nothing accepted, got {status}: {body}",
                case.name, case.status
            ));
        }
        for w in case.words {
            if !text.contains(w) {
                problems.push(format!(
                    "{}: the answer does not say '{w}': {text}",
                    case.name
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Nothing else is affected: the daemon is up and counts a normal batch exactly.
    daemon.wait_ready().await;
    let now = Utc::now();
    // In batches under the small body limit.
    for first in (0..300).step_by(50) {
        let batch: Vec<Value> = (first..first + 50)
            .map(|i| seed_event(i, now - chrono::Duration::milliseconds((i * 37) as i64)))
            .collect();
        let (status, body) = daemon.post_json(&Value::Array(batch)).await;
        assert_eq!((status, &body["accepted"]), (200, &json!(50)), "{body}");
    }
    let exact = wait_until_rollups_match(&mongo).await;
    assert_eq!(
        exact.values().sum::<i64>(),
        300,
        "only the normal batch was stored"
    );
    let stored = all(&mongo, "events", doc! {}).await;
    assert_eq!(stored.len(), 300);
    let stderr = daemon.stderr();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn one_client_flooding_new_dimension_tuples_is_bounded_and_others_keep_working() {
    const BOUND: usize = 40;
    const FLOOD_KEY: &str = "flood-key-9876543210";
    let mongo = TestMongo::start().await;
    let keys = format!("test:{API_KEY},flood:{FLOOD_KEY}");
    let bound = BOUND.to_string();
    let mut env = ENV.to_vec();
    env.push(("MONGOPULSE__ROLLUPS__MAX_OPEN_TUPLES", &bound));
    env.push(("MONGOPULSE_API_KEYS", &keys));
    // The flood is the point here, not the per-key rate limit.
    env.push(("MONGOPULSE__AUTH__REQUESTS_PER_SECOND", "100000"));
    env.push(("MONGOPULSE__AUTH__BURST", "100000"));
    let daemon = Daemon::start(&mongo, &env).await;
    let started = Instant::now();

    // The well-behaved client: seed events use 15 (country, device, browser) tuples.
    let good_batch = |first: usize| -> Value {
        let now = Utc::now();
        Value::Array((first..first + 150).map(|i| seed_event(i, now)).collect())
    };
    let (status, body) = daemon.post_json(&good_batch(0)).await;
    assert_eq!((status, &body["accepted"]), (200, &json!(150)), "{body}");

    // The flooder: a new browser value in every event.
    let flood = |from: usize| -> Vec<u8> {
        let now = Utc::now();
        let events: Vec<Value> = (from..from + 100)
            .map(|i| {
                let mut e = seed_event(i, now);
                e["metadata"]["dimensions"]["browser"] = json!(format!("flood-{i}"));
                e
            })
            .collect();
        serde_json::to_vec(&events).unwrap()
    };
    let post_flood = |body: Vec<u8>| {
        daemon
            .http
            .post(daemon.url("/v1/events"))
            .bearer_auth(FLOOD_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // The first flood batch fills the bound: what fits is accepted, the rest listed.
    let r = post_flood(flood(0)).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    let fitted = BOUND - 15;
    assert_eq!(body["accepted"], json!(fitted), "{body}");
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 100 - fitted);
    let reason = rejected[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("rollups.max_open_tuples") && reason.contains(&BOUND.to_string()),
        "{reason}"
    );
    // Past it, whole batches are refused with 429 and Retry-After.
    let flood_batches = 10;
    for b in 1..=flood_batches {
        let r = post_flood(flood(b * 100)).await.unwrap();
        assert_eq!(r.status().as_u16(), 429);
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry >= 1);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["accepted"], json!(0));
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("rollups.max_open_tuples"),
            "{body}"
        );
    }

    // The state stays bounded, and /metrics says so.
    let metrics = daemon.metrics().await;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{metrics}"))
    };
    assert!(
        value("mongopulse_rollup_open_tuples") <= BOUND as f64,
        "{metrics}"
    );
    assert_eq!(value("mongopulse_rollup_max_open_tuples"), BOUND as f64);
    assert_eq!(
        value("mongopulse_rollup_tuple_limit_refused_total"),
        (100 - fitted + flood_batches * 100) as f64
    );

    // The other client's events of open tuples are still accepted.
    let (status, body) = daemon.post_json(&good_batch(150)).await;
    assert_eq!((status, &body["accepted"]), (200, &json!(150)), "{body}");

    // Exact counts for everything accepted, and nothing refused was stored.
    let exact = wait_until_rollups_match(&mongo).await;
    assert_eq!(exact.values().sum::<i64>(), (300 + fitted) as i64);
    let flooded = all(
        &mongo,
        "events",
        doc! { "metadata.dimensions.browser": { "$regex": "^flood-" } },
    )
    .await;
    assert_eq!(flooded.len(), fitted, "refused events are not stored");

    // One warning a minute at most, however many requests were refused.
    let stderr = daemon.stderr();
    let warnings = stderr.matches("past rollups.max_open_tuples").count();
    let minutes = started.elapsed().as_secs() / 60;
    assert!(
        warnings >= 1 && warnings as u64 <= minutes + 1,
        "{warnings} warnings in {minutes} min:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn queries_that_write_run_code_leave_the_database_or_backtrack_are_refused() {
    let mongo = TestMongo::start().await;
    let daemon = Daemon::start(&mongo, &ENV).await;
    let now = Utc::now();
    let batch: Vec<Value> = (0..120)
        .map(|i| seed_event(i, now - chrono::Duration::seconds(i as i64)))
        .collect();
    let (status, _) = daemon.post_json(&Value::Array(batch)).await;
    assert_eq!(status, 200);
    wait_until_rollups_match(&mongo).await;

    let plugin = PluginProcess::start().await;
    let ds = DataSource::new(&mongo.uri, &mongo.db_name);
    let pipeline = |p: &str| json!({ "mode": "pipeline", "collection": "metrics_minutely", "format": "table", "pipeline": p });
    let adhoc = |op: &str, value: &str| {
        json!({ "eventType": "page_view", "measures": [{"type": "count"}],
                "adhocFilters": [{ "key": "country", "operator": op, "value": value }] })
    };
    // (refId, query, words its error must hold)
    let refused: Vec<(&str, Value, &[&str])> = vec![
        (
            "out",
            pipeline(r#"[{"$out": "stolen"}]"#),
            &["$out", "read-only"],
        ),
        (
            "merge",
            pipeline(r#"[{"$merge": {"into": "stolen"}}]"#),
            &["$merge", "read-only"],
        ),
        (
            "function",
            pipeline(
                r#"[{"$project": {"x": {"$function": {"body": "function() {return 1}", "args": [], "lang": "js"}}}}]"#,
            ),
            &["$function", "JavaScript"],
        ),
        (
            "accumulator",
            pipeline(
                r#"[{"$group": {"_id": 1, "x": {"$accumulator": {"init": "function() {}", "accumulate": "function() {}", "accumulateArgs": [], "merge": "function() {}", "lang": "js"}}}}]"#,
            ),
            &["$accumulator"],
        ),
        (
            "where",
            pipeline(r#"[{"$match": {"$where": "sleep(100000)"}}]"#),
            &["$where"],
        ),
        (
            "where in facet",
            pipeline(r#"[{"$facet": {"a": [{"$match": {"$where": "1"}}]}}]"#),
            &["$where"],
        ),
        (
            "out in lookup",
            pipeline(
                r#"[{"$lookup": {"from": "metrics_hourly", "as": "h", "pipeline": [{"$match": {"$where": "1"}}]}}]"#,
            ),
            &["$where"],
        ),
        (
            "lookup other db",
            pipeline(
                r#"[{"$lookup": {"from": {"db": "other", "coll": "x"}, "as": "o", "pipeline": []}}]"#,
            ),
            &["$lookup", "other", "own database"],
        ),
        (
            "graphLookup other db",
            pipeline(
                r#"[{"$graphLookup": {"from": {"db": "admin", "coll": "system.users"}, "startWith": "$a", "connectFromField": "a", "connectToField": "b", "as": "o"}}]"#,
            ),
            &["$graphLookup", "admin"],
        ),
        (
            "unionWith other coll",
            pipeline(r#"[{"$unionWith": {"coll": "users", "pipeline": []}}]"#),
            &["$unionWith", "users"],
        ),
        (
            "unionWith string",
            pipeline(r#"[{"$unionWith": "users"}]"#),
            &["$unionWith", "users"],
        ),
        (
            "lookup in unionWith",
            pipeline(
                r#"[{"$unionWith": {"coll": "metrics_daily", "pipeline": [{"$lookup": {"from": "secrets", "as": "s", "localField": "a", "foreignField": "b"}}]}}]"#,
            ),
            &["$lookup", "secrets"],
        ),
        (
            "regex in match",
            pipeline(r#"[{"$match": {"dimensions.country": {"$regex": "(a+)+$"}}}]"#),
            &["$regex", "without bound"],
        ),
        (
            "regexMatch",
            pipeline(
                r#"[{"$project": {"m": {"$regexMatch": {"input": "$dimensions.country", "regex": "(\\w+\\s?)*$"}}}}]"#,
            ),
            &["$regexMatch", "without bound"],
        ),
        (
            "regexFindAll backreference",
            pipeline(
                r#"[{"$project": {"m": {"$regexFindAll": {"input": "$dimensions.country", "regex": "(a)\\1"}}}}]"#,
            ),
            &["backreference"],
        ),
        (
            "adhoc =~",
            adhoc("=~", "(a+)+$"),
            &["adhocFilters[0].value", "without bound"],
        ),
        (
            "adhoc !~",
            adhoc("!~", "^(x*)*y"),
            &["adhocFilters[0].value", "without bound"],
        ),
        (
            "adhoc $ key",
            json!({ "eventType": "page_view", "measures": [{"type": "count"}], "adhocFilters": [{ "key": "$where", "operator": "=", "value": "1" }] }),
            &["adhocFilters[0].key"],
        ),
    ];
    let (from, to) = (
        now.timestamp_millis() - 30 * MINUTE,
        now.timestamp_millis() + MINUTE,
    );
    let queries: Vec<(&str, Value, i64, i64, i64)> = refused
        .iter()
        .map(|(r, q, _)| (*r, q.clone(), from, to, MINUTE))
        .collect();
    let mut answers = by_ref(plugin.query(&ds, &queries, &[]).await);
    let mut problems = Vec::new();
    for (ref_id, _, words) in &refused {
        match answers.remove(*ref_id) {
            Some(Err(e)) => {
                println!("{ref_id:<28} {}", &e[..e.len().min(160)]);
                for w in *words {
                    if !e.contains(w) {
                        problems.push(format!("{ref_id}: the error does not say '{w}': {e}"));
                    }
                }
            }
            other => problems.push(format!("{ref_id}: not refused: {other:?}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Nothing was written anywhere.
    let names = mongo.db().list_collection_names().await.unwrap();
    assert!(!names.iter().any(|n| n == "stolen"), "{names:?}");

    // The data source still answers normal queries, with the right count.
    let good = json!({ "eventType": "page_view", "measures": [{"type": "count"}], "format": "table",
                       "adhocFilters": [{ "key": "country", "operator": "=~", "value": "^(FR|DE)$" }] });
    let good_pipeline = pipeline(
        r#"[{"$match": {"spec": "default"}}, {"$group": {"_id": null, "n": {"$sum": "$metrics.count"}}}]"#,
    );
    let mut answers = by_ref(
        plugin
            .query(
                &ds,
                &[
                    ("good", good, from, to, MINUTE),
                    ("pipeline", good_pipeline, from, to, MINUTE),
                ],
                &[],
            )
            .await,
    );
    let frames = answers.remove("good").unwrap().unwrap();
    assert!(!frames.is_empty());
    let n = answers.remove("pipeline").unwrap().unwrap();
    assert_eq!(n[0].field("n").values, vec![json!(120)], "{:?}", n[0]);
    assert!(!plugin.stderr().contains("panicked"), "{}", plugin.stderr());
    assert!(!daemon.stderr().contains("panicked"));
}
