//! The database crashes under load: SecantusDB (durable, WiredTiger) is killed with
//! `kill -9` while events stream in, and restarted on the same data folder a few seconds
//! later. Meanwhile the daemon answers 503 with `Retry-After` (never 2xx for an event it
//! could not store) and its readiness says why; the plugin's health check reports the
//! outage. Afterwards everything recovers by itself: every event answered 2xx is in
//! `events` exactly once and counted exactly once in the rollups, and a live channel ends
//! with exactly the stored counts, never having shown more.
//!
//! Only SecantusDB can be crashed and restarted with its data: on the stand-in (which keeps
//! nothing) and on a shared real server the test says so and skips.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bson::doc;
use chrono::Utc;
use grafana_plugin_sdk::pluginv2::check_health_response::HealthStatus;
use serde_json::{json, Value};
use support::daemon::{seed_event, Daemon};
use support::mongo::TestMongo;
use support::plugin_harness::{DataSource, PluginProcess};
use support::recount::{all, wait_until_rollups_match};

const ENV: [(&str, &str); 4] = [
    ("MONGOPULSE__ROLLUPS__ALLOWED_LATENESS_SECS", "30"),
    ("MONGOPULSE__ROLLUPS__IDLE_FINALIZE_SECS", "0"),
    ("MONGOPULSE__ROLLUPS__FLUSH_INTERVAL_MS", "200"),
    ("MONGOPULSE__INGEST__WRITER__MAX_BATCH_DELAY_MS", "10"),
];

use support::until;

/// What the steady sender saw.
#[derive(Default)]
struct Sent {
    /// `attributes.seq` of every event answered 2xx.
    acknowledged: BTreeSet<i64>,
    /// Answers other than 2xx and 503-with-Retry-After (must stay empty).
    wrong: Vec<String>,
}

/// (minute, country) → count in one live packet. Times are read as a Grafana JSON frame
/// holds them: epoch milliseconds, or nanoseconds for a nanosecond time field.
fn live_counts(packet: &[u8]) -> Vec<((i64, String), f64)> {
    let Ok(f) = serde_json::from_slice::<Value>(packet) else {
        return Vec::new();
    };
    let fields = f["schema"]["fields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let values = f["data"]["values"].as_array().cloned().unwrap_or_default();
    let Some(t) = fields
        .iter()
        .position(|x| x["type"] == "time" || x["name"] == "time")
    else {
        return Vec::new();
    };
    let times: Vec<i64> = values[t]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (i, field) in fields.iter().enumerate() {
        let Some(country) = field["labels"]["country"].as_str() else {
            continue;
        };
        for (row, time) in times.iter().enumerate() {
            let ms = if *time > 10_000_000_000_000 {
                time / 1_000_000
            } else {
                *time
            };
            if let Some(v) = values[i][row].as_f64() {
                out.push(((ms, country.to_string()), v));
            }
        }
    }
    out
}

#[tokio::test]
async fn kill_9_of_the_database_under_load_loses_and_double_counts_nothing() {
    let mut mongo = TestMongo::start().await;
    if !mongo.is_secantus() {
        eprintln!(
            "skipped: crashing the database needs a durable local server \
             (MONGOPULSE_TEST_BACKEND=secantus); this run uses {}",
            mongo.backend.name()
        );
        return;
    }
    let daemon = Arc::new(Daemon::start(&mongo, &ENV).await);
    let plugin = PluginProcess::start().await;
    // A connect timeout the outage clearly exceeds, so the health check fails within it.
    let ds =
        DataSource::new(&mongo.uri, &mongo.db_name).with_json("connectTimeoutSeconds", 3.into());

    // A live channel, subscribed before anything happens.
    let query = json!({ "refId": "A", "eventType": "page_view", "measures": [{"type": "count"}], "groupBy": ["country"], "live": true });
    let path = mongopulse::live::channel_path(&query);
    let seed = daemon.post_json(&json!([seed_event(0, Utc::now())])).await;
    assert_eq!(seed.0, 200, "{}", seed.1);
    let mut stream = plugin.run_stream(&ds, &path, &query).await;
    // The latest value of every (minute, country) cell, and the highest it ever showed.
    let live: Arc<Mutex<BTreeMap<(i64, String), f64>>> = Arc::default();
    let live_max: Arc<Mutex<BTreeMap<(i64, String), f64>>> = Arc::default();
    let packets = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (live, live_max, packets) = (live.clone(), live_max.clone(), packets.clone());
        tokio::spawn(async move {
            while let Ok(Some(p)) = stream.message().await {
                let mut latest = live.lock().unwrap();
                let mut max = live_max.lock().unwrap();
                for (key, v) in live_counts(&p.data) {
                    let m = max.entry(key.clone()).or_insert(v);
                    *m = m.max(v);
                    latest.insert(key, v);
                }
                packets.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    // Steady ingest: batches of 20 distinct events, one after the other, until told to stop.
    let sent = Arc::new(Mutex::new(Sent::default()));
    sent.lock().unwrap().acknowledged.insert(0);
    let stop = Arc::new(AtomicBool::new(false));
    let answered_503 = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (daemon, sent, stop, answered_503) = (
            daemon.clone(),
            sent.clone(),
            stop.clone(),
            answered_503.clone(),
        );
        tokio::spawn(async move {
            let mut seq = 1usize;
            while !stop.load(Ordering::Relaxed) {
                let seqs: Vec<usize> = (seq..seq + 20).collect();
                seq += 20;
                let now = Utc::now();
                let body = Value::Array(seqs.iter().map(|&s| seed_event(s, now)).collect());
                let r = daemon.events_request().json(&body).send().await;
                let Ok(r) = r else {
                    continue; // never answered: not acknowledged
                };
                let status = r.status().as_u16();
                let retry_after = r.headers().contains_key("retry-after");
                let text = r.text().await.unwrap_or_default();
                let mut s = sent.lock().unwrap();
                match status {
                    200..=299 => {
                        let accepted = serde_json::from_str::<Value>(&text)
                            .ok()
                            .and_then(|b| b["accepted"].as_u64());
                        if accepted == Some(20) {
                            s.acknowledged.extend(seqs.iter().map(|&x| x as i64));
                        } else {
                            s.wrong.push(format!("{status} with {text}"));
                        }
                    }
                    503 if retry_after => {
                        answered_503.fetch_add(1, Ordering::Relaxed);
                        drop(s);
                        // A client honours Retry-After; a short pause keeps the load steady.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    _ => s
                        .wrong
                        .push(format!("{status} (Retry-After: {retry_after}): {text}")),
                }
            }
        })
    };
    let acknowledged = || sent.lock().unwrap().acknowledged.len();

    until("events acknowledged before the crash", || async {
        acknowledged() > 200
    })
    .await;
    let r = plugin.check_health(&ds).await;
    assert_eq!(r.status(), HealthStatus::Ok, "{}", r.message);

    // ---- the crash ------------------------------------------------------------------
    mongo.crash();
    let crashed_at = Instant::now();
    let readyz = || async {
        let r = daemon.http.get(daemon.url("/readyz")).send().await.ok()?;
        let status = r.status().as_u16();
        Some((status, r.json::<Value>().await.unwrap_or(Value::Null)))
    };
    until("readiness saying MongoDB is down", || async {
        matches!(readyz().await, Some((503, body)) if body["mongodb"] != "ok")
    })
    .await;
    let (_, why) = readyz().await.expect("readyz answers");
    assert_eq!(why["ready"], false, "{why}");
    assert!(
        why["mongodb"].as_str().is_some_and(|m| !m.is_empty()),
        "{why}"
    );
    until("503s with Retry-After while MongoDB is down", || async {
        answered_503.load(Ordering::Relaxed) >= 3
    })
    .await;
    let health = plugin.check_health(&ds).await;
    assert_eq!(health.status(), HealthStatus::Error, "{}", health.message);
    assert!(
        health.message.contains("127.0.0.1"),
        "the health check names the server it cannot reach: {}",
        health.message
    );
    // "After a few seconds": the scenario, not a wait for a condition.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(crashed_at.elapsed())).await;
    let acknowledged_at_restart = acknowledged();
    mongo.restart().await;

    // ---- recovery, by itself ---------------------------------------------------------
    until("readiness after the restart", || async {
        matches!(readyz().await, Some((200, _)))
    })
    .await;
    until("events acknowledged after the restart", || async {
        acknowledged() > acknowledged_at_restart + 200
    })
    .await;
    until("a healthy health check after the restart", || async {
        plugin.check_health(&ds).await.status() == HealthStatus::Ok
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    sender.await.expect("the sender ran");
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    assert!(
        sent.wrong.is_empty(),
        "answers other than 2xx or 503 with Retry-After: {:?}",
        sent.wrong
    );

    // Every event answered 2xx is in `events`, once.
    let mut stored: BTreeMap<i64, usize> = BTreeMap::new();
    for e in all(&mongo, "events", doc! {}).await {
        let seq = e.get_document("attributes").unwrap().get("seq").unwrap();
        let seq = seq
            .as_i64()
            .or_else(|| seq.as_i32().map(i64::from))
            .unwrap();
        *stored.entry(seq).or_default() += 1;
    }
    let lost: Vec<_> = sent
        .acknowledged
        .iter()
        .filter(|s| !stored.contains_key(s))
        .collect();
    let twice: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        lost.is_empty(),
        "acknowledged but not stored: {} {lost:?}",
        lost.len()
    );
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    // And counted exactly once in the rollups.
    let exact = wait_until_rollups_match(&mongo).await;

    // The live channel ends with exactly the stored counts per minute and country.
    let mut by_cell: BTreeMap<(i64, String), f64> = BTreeMap::new();
    for ((minute, event_type, country, _, _), n) in &exact {
        if event_type == "page_view" {
            *by_cell.entry((*minute, country.clone())).or_default() += *n as f64;
        }
    }
    until("the live channel showing every stored event", || async {
        let latest = live.lock().unwrap();
        by_cell.iter().all(|(k, v)| latest.get(k) == Some(v))
    })
    .await;
    // No frame ever showed more than was stored: nothing counted twice on the way.
    let over: Vec<_> = live_max
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, v)| by_cell.get(*k).is_some_and(|exact| **v > *exact))
        .map(|(k, v)| format!("{k:?}: {v} > {}", by_cell[k]))
        .collect();
    assert!(
        over.is_empty(),
        "live showed more than was stored: {over:?}"
    );
    assert!(packets.load(Ordering::Relaxed) > 1);
    reader.abort();
    eprintln!(
        "crash test: {} events acknowledged, {} stored, {} answers of 503 during the outage; lost 0, counted twice 0",
        sent.acknowledged.len(),
        stored.len(),
        answered_503.load(Ordering::Relaxed)
    );
}
