//! The rollup pipeline end to end, black-box: the real daemon, HTTP, and the
//! MongoDB stand-in (or MONGODB_URI). A `kill -9` in the middle of the stream
//! must neither lose nor double-count an event; backfill recomputes the same.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use chrono::Utc;
use serde_json::Value;
use support::daemon::{seed_event, Daemon, API_KEY};
use support::mongo::TestMongo;
use support::recount::{all, rollup_counts, wait_until_rollups_match, Key};

const ENV: [(&str, &str); 4] = [
    ("MONGOPULSE__ROLLUPS__ALLOWED_LATENESS_SECS", "30"),
    ("MONGOPULSE__ROLLUPS__IDLE_FINALIZE_SECS", "0"),
    ("MONGOPULSE__ROLLUPS__FLUSH_INTERVAL_MS", "200"),
    ("MONGOPULSE__INGEST__WRITER__MAX_BATCH_DELAY_MS", "10"),
];

/// Posts batches of recent events for `duration`; returns how many were acknowledged.
async fn post_for(daemon: &Daemon, first_seq: usize, duration: Duration) -> usize {
    let started = Instant::now();
    let mut seq = first_seq;
    let mut acknowledged = 0;
    while started.elapsed() < duration {
        let now = Utc::now();
        let batch: Vec<Value> = (0..25)
            .map(|i| {
                seed_event(
                    seq + i,
                    now - chrono::Duration::milliseconds(((seq + i) * 7919 % 20_000) as i64),
                )
            })
            .collect();
        seq += 25;
        let r = daemon.events_request().json(&batch).send().await;
        match r {
            Ok(r) if r.status().is_success() => {
                let body: Value = r.json().await.unwrap();
                acknowledged += body["accepted"].as_u64().unwrap() as usize;
            }
            _ => break,
        }
    }
    acknowledged
}

/// Runs `mongopulsed backfill ARGS` on the test's database; its output is kept for the
/// secrets scan.
fn backfill(mongo: &TestMongo, args: &[&str]) -> std::process::Output {
    support::capture::output(
        std::process::Command::new(env!("CARGO_BIN_EXE_mongopulsed"))
            .arg("backfill")
            .args(args)
            .env("MONGOPULSE__MONGODB__URI", &mongo.uri)
            .env("MONGOPULSE__MONGODB__DATABASE", &mongo.db_name)
            .env("MONGOPULSE_API_KEYS", "x:backfill-test-key-8c3e"),
        "mongopulsed",
    )
    .unwrap()
}

#[tokio::test]
async fn kill_9_mid_stream_then_restart_counts_every_event_once() {
    let mongo = TestMongo::start().await;
    let daemon = Daemon::start(&mongo, &ENV).await;
    let first = post_for(&daemon, 0, Duration::from_secs(3)).await;
    assert!(first > 0);
    // Crash while a sender is still posting.
    let sender = {
        let http = daemon.http.clone();
        let url = daemon.url("/v1/events");
        tokio::spawn(async move {
            for k in 0..200usize {
                let now = Utc::now();
                let batch: Vec<Value> = (0..25)
                    .map(|i| seed_event(1_000_000 + k * 25 + i, now))
                    .collect();
                if http
                    .post(&url)
                    .bearer_auth(API_KEY)
                    .json(&batch)
                    .send()
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    daemon.signal("KILL");
    let _ = sender.await;
    drop(daemon);

    let daemon = Daemon::start(&mongo, &ENV).await;
    // The log line travels through a pipe read by another thread: wait for
    // it (readiness can be answered first), bounded only against a hang.
    let deadline = Instant::now() + support::PATIENCE;
    while !daemon
        .stderr()
        .contains("rollups recovered from the checkpoint")
    {
        assert!(Instant::now() < deadline, "{}", daemon.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = post_for(&daemon, 2_000_000, Duration::from_secs(3)).await;
    assert!(second > 0);
    let exact = wait_until_rollups_match(&mongo).await;
    let total: i64 = exact.values().sum();
    assert!(
        total as usize >= first + second,
        "{total} stored, {} acknowledged",
        first + second
    );

    let metrics = daemon.metrics().await;
    assert!(
        metrics.contains("mongopulse_rollup_documents_written_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mongopulse_rollup_materialization_lag_seconds"),
        "{metrics}"
    );
}

#[tokio::test]
async fn late_events_are_refused_counted_and_dead_lettered() {
    let mongo = TestMongo::start().await;
    let daemon = Daemon::start(&mongo, &ENV).await;
    let now = Utc::now();
    let fresh: Vec<Value> = (0..5).map(|i| seed_event(i, now)).collect();
    let (status, _) = daemon.post_json(&Value::Array(fresh)).await;
    assert_eq!(status, 200);
    // Two minutes behind the newest event: past the 30 s lateness.
    let (status, body) = daemon
        .post_json(&Value::Array(vec![
            seed_event(99, now - chrono::Duration::seconds(150)),
            seed_event(100, now),
        ]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["rejected"][0]["index"], 0);
    assert!(
        body["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("too late"),
        "{body}"
    );
    let letters = all(&mongo, "dead_letters", doc! { "kind": "late" }).await;
    assert_eq!(letters.len(), 1);
    let metrics = daemon.metrics().await;
    assert!(
        metrics.contains("mongopulse_rollup_late_dropped_total 1"),
        "{metrics}"
    );
    wait_until_rollups_match(&mongo).await;
}

#[tokio::test]
async fn backfill_recomputes_the_same_rollups_and_is_safe_to_rerun() {
    let mongo = TestMongo::start().await;
    let mut daemon = Daemon::start(&mongo, &ENV).await;
    post_for(&daemon, 0, Duration::from_secs(2)).await;
    let exact = wait_until_rollups_match(&mongo).await;
    daemon.signal("TERM");
    assert!(daemon.wait(support::PATIENCE).success());

    // Lose the rollups, then recompute them from the raw events, twice.
    for level in [
        "metrics_minutely",
        "metrics_hourly",
        "metrics_daily",
        "metrics_monthly",
    ] {
        mongo
            .db()
            .collection::<Document>(level)
            .delete_many(doc! {})
            .await
            .unwrap();
    }
    let from = exact.keys().next().unwrap().0;
    let to = exact.keys().last().unwrap().0 + 60_000;
    for _ in 0..2 {
        let out = backfill(
            &mongo,
            &[
                "--from",
                &from.to_string(),
                "--to",
                &to.to_string(),
                "--force",
            ],
        );
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{log}");
        assert!(log.contains("backfill done"), "{log}");
        assert!(log.contains("events"), "progress is reported: {log}");
        assert_eq!(rollup_counts(&mongo, "metrics_minutely").await, exact);
        // Each hour holds the sum of its minutes.
        let mut by_hour: BTreeMap<Key, i64> = BTreeMap::new();
        for ((ms, a, b, c, d), n) in &exact {
            *by_hour
                .entry((
                    ms - ms.rem_euclid(3_600_000),
                    a.clone(),
                    b.clone(),
                    c.clone(),
                    d.clone(),
                ))
                .or_insert(0) += n;
        }
        assert_eq!(rollup_counts(&mongo, "metrics_hourly").await, by_hour);
    }

    // Without --force, a range the daemon has not finalised is refused with advice.
    let out = backfill(
        &mongo,
        &[
            "--from",
            &from.to_string(),
            "--to",
            &(Utc::now().timestamp_millis() + 3_600_000).to_string(),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
}

#[tokio::test]
async fn a_client_that_gives_up_mid_request_still_has_its_stored_events_counted() {
    let mongo = TestMongo::start().await;
    let Some(pid) = mongo.server_pid() else {
        eprintln!("skipped: pausing MongoDB needs a local test server (MONGODB_URI is set)");
        return;
    };
    let daemon = Daemon::start(&mongo, &ENV).await;
    post_for(&daemon, 0, Duration::from_millis(500)).await;
    // MongoDB stalls; the client stops waiting long before the daemon's write timeout.
    support::daemon::signal(pid, "STOP");
    let now = Utc::now();
    let batch: Vec<Value> = (0..30).map(|i| seed_event(500_000 + i, now)).collect();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let r = impatient
        .post(daemon.url("/v1/events"))
        .bearer_auth(API_KEY)
        .json(&batch)
        .send()
        .await;
    assert!(r.is_err(), "the client gave up");
    support::daemon::signal(pid, "CONT");
    // Whatever MongoDB stored is in the rollups; nothing holds a minute open.
    post_for(&daemon, 1_000_000, Duration::from_millis(500)).await;
    wait_until_rollups_match(&mongo).await;
}

/// A daemon killed mid-insert may have sent an insert that a loaded MongoDB applies only
/// after the restarted daemon has read `events` (SecantusDB under load did, in
/// tests/reliability.rs). Here the test stores such events itself, as the killed run
/// would have (its `writer`, ids not made by the new process), right after recovery:
/// they must be counted.
#[tokio::test]
async fn events_a_killed_run_stored_after_the_recovery_read_are_counted() {
    let mongo = TestMongo::start().await;
    // The second look comes this long after recovery: ample time for the test's insert.
    let env: Vec<(&str, &str)> = ENV
        .iter()
        .copied()
        .chain([("MONGOPULSE__INGEST__WRITER__WRITE_TIMEOUT_MS", "20000")])
        .collect();
    let daemon = Daemon::start(&mongo, &env).await;
    assert!(post_for(&daemon, 0, Duration::from_millis(500)).await > 0);
    support::until("a rollup checkpoint", || async {
        !all(&mongo, "checkpoints", doc! {}).await.is_empty()
    })
    .await;
    daemon.signal("KILL");
    drop(daemon);

    let daemon = Daemon::start(&mongo, &env).await;
    support::until("the recovery", || async {
        daemon
            .stderr()
            .contains("rollups recovered from the checkpoint")
    })
    .await;
    let events = mongo.db().collection::<Document>("events");
    let template = events
        .find_one(doc! {})
        .await
        .unwrap()
        .expect("a stored event");
    let now = bson::DateTime::now();
    let late: Vec<Document> = (0..50)
        .map(|_| {
            let mut d = template.clone();
            d.insert("_id", bson::oid::ObjectId::new());
            d.insert("timestamp", now);
            d
        })
        .collect();
    events.insert_many(late).await.unwrap();

    wait_until_rollups_match(&mongo).await;
    support::until("the warning that names them", || async {
        daemon.stderr().contains("they are counted now")
    })
    .await;
}
