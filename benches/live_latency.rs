//! End-to-end latency of live panels: from the moment the daemon answers a
//! POST to the moment a Grafana Live frame containing that event reaches the
//! subscriber (the Grafana-protocol harness). Real daemon, real plugin, the
//! stand-in (or MONGODB_URI). Prints p50/p95/p99 over the events sent.
//! Run by `scripts/bench-live.sh`; not a criterion benchmark: it measures
//! wall-clock delays across processes, which is what a user sees.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::daemon::{Daemon, API_KEY};
use support::mongo::TestMongo;
use support::plugin_harness::{DataSource, PluginProcess};

/// When a frame arrived, and each minute's count in it.
type Seen = (Instant, BTreeMap<i64, f64>);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

#[tokio::main]
async fn main() {
    let events: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rate: f64 = std::env::var("RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50.0);
    let flush = std::env::var("FLUSH_MS").unwrap_or_else(|_| "250".into());
    let mongo = TestMongo::start().await;
    let daemon = Daemon::start(
        &mongo,
        &[("MONGOPULSE__ROLLUPS__FLUSH_INTERVAL_MS", flush.as_str())],
    )
    .await;
    let plugin = PluginProcess::start().await;
    let ds = DataSource::new(&mongo.uri, &mongo.db_name);
    let event = |ms: i64, i: usize| json!({ "timestamp": ms, "metadata": { "eventType": "bench", "dimensions": { "userId": format!("u{i}") } }, "metrics": { "v": 1 } });
    // A first event so the event type is known.
    daemon
        .http
        .post(daemon.url("/v1/events"))
        .bearer_auth(API_KEY)
        .json(&event(chrono::Utc::now().timestamp_millis(), 0))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let q = json!({ "eventType": "bench", "measures": [{"type": "count"}], "live": true });
    let path = mongopulse::live::channel_path(&q);
    let mut stream = plugin.run_stream(&ds, &path, &q).await;
    stream.message().await.unwrap().unwrap();

    // The frames: when each minute's count was first seen at each value.
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let sink = seen.clone();
    tokio::spawn(async move {
        while let Ok(Some(p)) = stream.message().await {
            let at = Instant::now();
            let f: Value = serde_json::from_slice(&p.data).unwrap();
            let v = &f["data"]["values"];
            let mut counts = BTreeMap::new();
            if let (Some(t), Some(c)) = (v[0].as_array(), v[1].as_array()) {
                for (t, c) in t.iter().zip(c) {
                    if let (Some(t), Some(c)) = (t.as_i64(), c.as_f64()) {
                        counts.insert(t, c);
                    }
                }
            }
            sink.lock().unwrap().push((at, counts));
        }
    });

    // Send at a steady rate; remember when each POST was answered and which
    // count of its minute it makes.
    let mut per_minute: BTreeMap<i64, f64> = BTreeMap::new();
    per_minute.insert(0, 0.0);
    let mut sent: Vec<(Instant, i64, f64)> = Vec::with_capacity(events);
    let gap = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    // Count the warm-up event into its minute.
    let warm_minute = {
        let now = chrono::Utc::now().timestamp_millis();
        now - now.rem_euclid(60_000)
    };
    let base: f64 = {
        let r = plugin.query(&ds, &[("A", json!({ "eventType": "bench", "measures": [{"type": "count"}], "granularity": "minute" }), warm_minute, warm_minute + 60_000, 60_000)], &[]).await;
        support::frames::by_ref(r)
            .remove("A")
            .unwrap()
            .unwrap()
            .first()
            .and_then(|f| f.fields.get(1))
            .and_then(|f| f.values.first())
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
    };
    per_minute.insert(warm_minute, base);
    for i in 0..events {
        let due = started + gap * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let now = chrono::Utc::now().timestamp_millis();
        let minute = now - now.rem_euclid(60_000);
        let r = daemon
            .http
            .post(daemon.url("/v1/events"))
            .bearer_auth(API_KEY)
            .json(&event(now, i + 1))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let answered = Instant::now();
        let n = per_minute.entry(minute).or_insert(0.0);
        *n += 1.0;
        sent.push((answered, minute, *n));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;

    let frames = seen.lock().unwrap().clone();
    let mut delays: Vec<f64> = Vec::new();
    let mut missing = 0;
    for (answered, minute, n) in &sent {
        match frames
            .iter()
            .find(|(_, counts)| counts.get(minute).is_some_and(|c| c >= n))
        {
            Some((at, _)) => {
                delays.push(at.saturating_duration_since(*answered).as_secs_f64() * 1000.0)
            }
            None => missing += 1,
        }
    }
    delays.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("live latency: POST answered → frame at the subscriber ({} events at {rate}/s, daemon flush every {flush} ms, 4 pushes/s per channel)", sent.len());
    println!("{:>8} {:>10}", "", "ms");
    for p in [50.0, 95.0, 99.0] {
        println!("{:>8} {:>10.0}", format!("p{p}"), percentile(&delays, p));
    }
    println!(
        "{:>8} {:>10.0}",
        "max",
        delays.last().copied().unwrap_or(0.0)
    );
    if missing > 0 {
        println!("{missing} events never seen in a frame");
    }
    println!("goal: p99 < 1000 ms, p50 < 400 ms");
}
