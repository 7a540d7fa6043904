//! The daemon's alert engine, black-box: rules in a file, events over HTTP,
//! rollups in the stand-in (or MONGODB_URI), notifications to real local
//! receivers (an HMAC-checking webhook and an Alertmanager-compatible endpoint).

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use bson::{doc, Document};
use chrono::Utc;
use futures_util::TryStreamExt;
use mongopulse::alerting::notify::verify_signature;
use serde_json::{json, Value};
use support::daemon::{Daemon, API_KEY};
use support::mongo::TestMongo;

#[derive(Default)]
struct Received {
    hook: Vec<Value>,
    alertmanager: Vec<Value>,
    bad_signatures: usize,
}

type Shared = Arc<Mutex<Received>>;

async fn hook(State(r): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let sig = headers
        .get("x-mongopulse-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut r = r.lock().unwrap();
    if !verify_signature(b"hook-secret", &body, sig) {
        r.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    r.hook.push(serde_json::from_slice(&body).unwrap());
    StatusCode::OK
}

async fn alertmanager(State(r): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer am-token") {
        return StatusCode::UNAUTHORIZED;
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    let alert = &v[0];
    assert!(
        alert["labels"]["alertname"].is_string()
            && alert["startsAt"].is_string()
            && alert["generatorURL"].is_string(),
        "{v}"
    );
    r.lock().unwrap().alertmanager.push(v);
    StatusCode::OK
}

async fn receivers() -> (String, Shared) {
    let shared = Shared::default();
    let app = Router::new()
        .route("/hook", post(hook))
        .route(
            "/api/alertmanager/grafana/api/v2/alerts",
            post(alertmanager),
        )
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, shared)
}

fn event(ms: i64, country: &str, load: f64, i: usize) -> Value {
    json!({
        "timestamp": ms,
        "metadata": { "eventType": "page_view", "dimensions": { "userId": format!("u{i}"), "sessionId": format!("s{i}"), "country": country, "deviceType": "mobile", "browser": "Chrome" } },
        "metrics": { "pageLoadTime": load }
    })
}

async fn transitions(mongo: &TestMongo) -> Vec<Document> {
    mongo
        .db()
        .collection::<Document>("alerts")
        .find(doc! {})
        .sort(doc! { "at": 1 })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test]
async fn grouped_rule_fires_for_one_country_after_for_resolves_and_notifies_once_per_transition() {
    let mongo = TestMongo::start().await;
    let (base, received) = receivers().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        r#"
rules:
  - id: slow-pages
    name: Slow page loads
    eventType: page_view
    measure: { type: percentile, metric: pageLoadTime, percentile: 95 }
    groupBy: [country]
    window: 1m
    condition: { type: above, threshold: 3000 }
    for: 2m
    severity: critical
    annotations: { summary: "p95 {{value}} ms in {{country}}" }
    notifiers: [hook, grafana]
"#,
    )
    .unwrap();
    let config = dir.path().join("mongopulse.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[rollups]
allowed_lateness_secs = 60
idle_finalize_secs = 86400
flush_interval_ms = 200

[alerting]
rules_file = "{}"

[[alerting.notifiers]]
type = "webhook"
name = "hook"
url = "{base}/hook"
secret = "hook-secret"

[[alerting.notifiers]]
type = "alertmanager"
name = "grafana"
url = "{base}"
token = "am-token"
"#,
            rules.display()
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&mongo, &[("MONGOPULSE_CONFIG", config.to_str().unwrap())]).await;

    // Fifteen minutes of history, posted in order: FR is slow in minutes 4 to 8.
    let now = Utc::now().timestamp_millis();
    let base_ms = now - now.rem_euclid(60_000) - 30 * 60_000;
    for minute in 0..16i64 {
        let mut batch = Vec::new();
        for i in 0..20usize {
            let ms = base_ms + minute * 60_000 + (i as i64) * 2_000;
            let fr_load = if (4..=8).contains(&minute) {
                5_000.0
            } else {
                500.0
            };
            batch.push(event(ms, "FR", fr_load + i as f64, i));
            batch.push(event(ms, "DE", 500.0 + i as f64, i));
        }
        let r = daemon.events_request().json(&batch).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        // Let the flusher finalise and the engine evaluate minute by minute.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let minute = |k: i64| base_ms + k * 60_000;
    let deadline = Instant::now() + support::PATIENCE;
    let states = loop {
        let t = transitions(&mongo).await;
        let done = t.iter().any(|d| d.get_str("state").unwrap() == "resolved");
        if done || Instant::now() > deadline {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let got: Vec<(String, String, i64)> = states
        .iter()
        .map(|d| {
            (
                d.get_str("instance").unwrap().to_string(),
                d.get_str("state").unwrap().to_string(),
                d.get_datetime("at").unwrap().timestamp_millis(),
            )
        })
        .collect();
    // Evaluated at each minute boundary: minute 4 is final at minute(5).
    assert_eq!(
        got,
        vec![
            ("country=FR".to_string(), "pending".to_string(), minute(5)),
            ("country=FR".to_string(), "firing".to_string(), minute(7)),
            ("country=FR".to_string(), "resolved".to_string(), minute(10)),
        ],
        "{}",
        daemon.stderr()
    );
    let firing = &states[1];
    assert!(firing.get_f64("value").unwrap() > 3000.0);
    let summary = firing.get_str("summary").unwrap();
    assert!(
        summary.starts_with("p95 ") && summary.ends_with(" ms in FR"),
        "{summary}"
    );

    // Exactly one notification per transition per notifier, and their log on the alert.
    let deadline = Instant::now() + support::PATIENCE;
    loop {
        let both = {
            let r = received.lock().unwrap();
            r.hook.len() >= 2 && r.alertmanager.len() >= 2
        };
        if both || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    {
        let r = received.lock().unwrap();
        assert_eq!(r.bad_signatures, 0);
        let statuses: Vec<&str> = r
            .hook
            .iter()
            .map(|v| v["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["firing", "resolved"]);
        assert!(r
            .hook
            .iter()
            .all(|v| v["alert"]["labels"]["country"] == "FR"));
        // Alertmanager forgets an alert not re-sent: firing instances are re-sent each
        // minute (same startsAt), then resolved once.
        let am: Vec<(String, String)> = r
            .alertmanager
            .iter()
            .map(|v| {
                (
                    v[0]["startsAt"].as_str().unwrap().to_string(),
                    v[0]["endsAt"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        assert!(am.iter().all(|(s, _)| *s == am[0].0), "{am:?}");
        assert!(am.len() >= 2, "{am:?}");
    }
    let logged = transitions(&mongo).await;
    let log = logged[1].get_array("notifications").unwrap();
    assert_eq!(log.len(), 2, "{logged:?}");
    assert!(log
        .iter()
        .all(|d| d.as_document().unwrap().get_bool("ok").unwrap()));

    // The API shows the rule, the current states and the history.
    let get = |path: &str| {
        daemon
            .http
            .get(daemon.url(path))
            .bearer_auth(API_KEY)
            .send()
    };
    let rules: Value = get("/v1/alerts/rules").await.unwrap().json().await.unwrap();
    assert_eq!(rules["rules"][0]["id"], "slow-pages");
    let state: Value = get("/v1/alerts/state").await.unwrap().json().await.unwrap();
    let fr = state["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance"] == "country=FR")
        .unwrap();
    assert_eq!(fr["state"], "normal");
    let history: Value = get("/v1/alerts/history?rule=slow-pages&limit=10")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(history["transitions"].as_array().unwrap().len(), 3);
    let unauthorized = daemon
        .http
        .get(daemon.url("/v1/alerts/state"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
}

#[tokio::test]
async fn a_bad_rules_file_stops_the_daemon_naming_the_rule_and_field() {
    let mongo = TestMongo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - id: broken\n    condition: { type: above, threshold: 1 }\n    window: 90s\n",
    )
    .unwrap();
    let out = support::capture::output(
        std::process::Command::new(env!("CARGO_BIN_EXE_mongopulsed"))
            .env("MONGOPULSE__MONGODB__URI", &mongo.uri)
            .env("MONGOPULSE__HTTP__LISTEN", "127.0.0.1:0")
            .env("MONGOPULSE_API_KEYS", "t:alerting-test-key-51d2")
            .env("MONGOPULSE__ALERTING__RULES_FILE", &rules),
        "mongopulsed",
    )
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rule 'broken': window"), "{err}");
}
