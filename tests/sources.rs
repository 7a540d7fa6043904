//! Broker sources, black-box: the real daemon consuming from the real brokers on
//! loopback (NATS JetStream on 4222, RabbitMQ on 5672, Mosquitto on 1883; `.ci/run`
//! starts them; Kafka: librdkafka's mock cluster, which each test starts and the
//! daemons reach over TCP), storing into the MongoDB stand-in (or the server in
//! MONGODB_URI).
//!
//! What a test checks is what the broker says (its own consumer and queue
//! counts, read with its own client) and what `events` and the rollups hold.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bson::doc;
use chrono::Utc;
use lapin::options::BasicPublishOptions;
use lapin::BasicProperties;
use serde_json::{json, Value};
use support::brokers::{
    bodies, daemon_with, metric, mqtt_daemon, unique, Kafka, Mqtt, Nats, Rabbit,
};
use support::daemon::{seed_event, signal, Daemon};
use support::mongo::TestMongo;

/// The `attributes.seq` of each event in a message body.
fn seqs_in(body: &[u8]) -> Vec<i64> {
    let text = String::from_utf8_lossy(body);
    text.split("\"seq\":")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().ok()
        })
        .collect()
}

/// How many times each `attributes.seq` is in `events`.
async fn stored(mongo: &TestMongo) -> BTreeMap<i64, usize> {
    support::recount::recount_and_seqs(mongo).await.1
}

/// Waits until `n` events are stored. A slow machine stores them slowly: only
/// [`support::PATIENCE`] without one more stored event is a hang.
async fn wait_stored(mongo: &TestMongo, n: usize, daemon: &Daemon) {
    let mut deadline = Instant::now() + support::PATIENCE;
    let mut before = 0;
    loop {
        let seqs = stored(mongo).await;
        let seen = seqs.len();
        if seen >= n {
            return;
        }
        if seen > before {
            before = seen;
            deadline = Instant::now() + support::PATIENCE;
        }
        if Instant::now() >= deadline {
            // Where it stalled: which events are missing, and what the daemon's
            // sources say (messages in flight, Kafka lag per partition).
            let sources: Vec<String> = daemon
                .metrics()
                .await
                .lines()
                .filter(|l| l.starts_with("mongopulse_source_") && !l.contains("_bucket{"))
                .map(str::to_string)
                .collect();
            panic!(
                "only {seen} of {n} events stored, none more for {} s; missing seqs {:?}\nsource metrics:\n{}\nlog:\n{}",
                support::PATIENCE.as_secs(),
                missing_runs(&seqs, n),
                sources.join("\n"),
                daemon.stderr()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The seqs of `0..n` not in `seqs`, as runs `(first, last)`.
fn missing_runs(seqs: &BTreeMap<i64, usize>, n: usize) -> Vec<(i64, i64)> {
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for s in (0..n as i64).filter(|s| !seqs.contains_key(s)) {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == s => *last = s,
            _ => runs.push((s, s)),
        }
    }
    runs
}

/// Every seq of `expected` stored exactly once, and the rollups equal a recount.
async fn assert_exactly_once(mongo: &TestMongo, expected: std::ops::Range<usize>) {
    let seqs = stored(mongo).await;
    let twice: Vec<_> = seqs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let want: Vec<i64> = expected.map(|s| s as i64).collect();
    let have: Vec<i64> = seqs.keys().copied().collect();
    assert_eq!(have, want, "the events stored are not the events published");
    let counted: i64 = support::recount::wait_until_rollups_match(mongo)
        .await
        .values()
        .sum();
    assert_eq!(counted, want.len() as i64, "counted once each");
}

/// Shown only if an assertion fails: both runs' logs, and how many redelivered events
/// the restarted daemon found stored already (the crash case the tests are after).
async fn show_runs(first: &Daemon, second: &Daemon) {
    let m = second.metrics().await;
    let found: f64 = m
        .lines()
        .filter_map(support::prom::sample)
        .filter(|s| {
            s.name == "mongopulse_source_events_total"
                && s.labels.get("outcome").is_some_and(|o| o == "duplicate")
        })
        .map(|s| s.value)
        .sum();
    eprintln!(
        "first run:\n{}\nsecond run:\n{}\nthe restarted daemon found {found} redelivered events stored already",
        first.stderr(),
        second.stderr()
    );
}

/// Pauses MongoDB (SIGSTOP) while `publish_more` runs; the source then retries and
/// holds at most `max_held` messages unacknowledged. Kills the daemon there and lets
/// MongoDB go on: what the broker holds as acknowledged is then final.
async fn pause_mongodb_then_kill(
    daemon: &mut Daemon,
    mongo_pid: u32,
    source: &str,
    max_held: usize,
    publish_more: impl std::future::Future<Output = ()>,
) {
    signal(mongo_pid, "STOP");
    publish_more.await;
    let retries = format!("mongopulse_source_retries_total{{source=\"{source}\"}}");
    support::until("the source retries while MongoDB is paused", || async {
        metric(&daemon.metrics().await, &retries) > 0.0
    })
    .await;
    let in_flight = format!("mongopulse_source_in_flight{{source=\"{source}\"}}");
    let held = metric(&daemon.metrics().await, &in_flight);
    assert!(
        held <= max_held as f64,
        "bounded: {held} messages held, {max_held} at most"
    );
    daemon.signal("KILL");
    daemon.wait(support::PATIENCE);
    signal(mongo_pid, "CONT");
}

/// 300 events in messages, with two poison messages among them: message 10 is not
/// JSON, message 20 an event without a timestamp.
fn with_two_poison_messages(at: chrono::DateTime<Utc>) -> Vec<Vec<u8>> {
    let mut messages = bodies(0..300, at);
    messages.insert(10, b"this is not json".to_vec());
    let mut no_time = seed_event(9_999, at);
    no_time.as_object_mut().unwrap().remove("timestamp");
    messages.insert(20, no_time.to_string().into_bytes());
    messages
}

/// `/metrics` counts `stored` events and `acked` messages for `source`, which is up,
/// and `/readyz` says it is ok.
async fn assert_source_reports(daemon: &Daemon, source: &str, stored: usize, acked: usize) {
    let m = daemon.metrics().await;
    let of = |name: &str, outcome: &str| {
        let labels = match outcome {
            "" => format!("{{source=\"{source}\"}}"),
            o => format!("{{source=\"{source}\",outcome=\"{o}\"}}"),
        };
        metric(&m, &format!("mongopulse_source_{name}{labels}"))
    };
    assert_eq!(of("events_total", "stored"), stored as f64, "{m}");
    assert_eq!(of("messages_acked_total", ""), acked as f64, "{m}");
    assert_eq!(of("up", ""), 1.0, "{m}");
    let ready: Value = reqwest::get(daemon.url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["sources"][source], "ok", "{ready}");
}

/// Kills the daemon with SIGKILL once it stored `at_least` events while it holds
/// messages it has not acknowledged, the publisher still going.
async fn kill_mid_stream(daemon: &mut Daemon, source: &str, at_least: usize) {
    stop_mid_stream(daemon, source, at_least, "KILL").await
}

/// Sends `signal` to the daemon once it stored `at_least` events itself while it
/// holds messages it has not acknowledged, and waits for it to end. Both are read
/// from one `/metrics` answer, a few milliseconds apart at most: reading `events`
/// between the two took long enough on a busy machine for a daemon to drain its
/// share of the stream unseen.
async fn stop_mid_stream(daemon: &mut Daemon, source: &str, at_least: usize, signal: &str) {
    let in_flight = format!("mongopulse_source_in_flight{{source=\"{source}\"}}");
    let stored =
        format!("mongopulse_source_events_total{{source=\"{source}\",outcome=\"stored\"}}");
    let deadline = Instant::now() + support::PATIENCE;
    loop {
        let m = daemon.metrics().await;
        let (stored, held) = (metric(&m, &stored), metric(&m, &in_flight));
        if stored >= at_least as f64 && held > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never mid-stream ({stored} events stored, {held} messages in flight): {}",
            daemon.stderr()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    daemon.signal(signal);
    daemon.wait(support::PATIENCE);
}

// ---------------------------------------------------------------- NATS JetStream

#[tokio::test]
async fn nats_events_are_stored_and_counted_and_bad_messages_dead_lettered_with_coordinates() {
    let mongo = TestMongo::start().await;
    let nats = Nats::new().await;
    let at = Utc::now() - chrono::Duration::seconds(5);
    let messages = with_two_poison_messages(at);
    nats.publish(&messages).await;

    let daemon = daemon_with(&mongo, &nats.source(""), &[]).await;
    wait_stored(&mongo, 300, &daemon).await;
    nats.wait_all_acked().await;
    assert_exactly_once(&mongo, 0..300).await;

    let letters = support::recount::all(&mongo, "dead_letters", doc! {}).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    let by_seq: BTreeMap<i64, &bson::Document> = letters
        .iter()
        .map(|l| {
            (
                l.get_document("origin")
                    .unwrap()
                    .get_i64("sequence")
                    .unwrap(),
                l,
            )
        })
        .collect();
    // Stream sequences count from 1: the 11th and 21st messages.
    let bad_json = by_seq[&11];
    assert_eq!(bad_json.get_str("raw").unwrap(), "this is not json");
    let origin = bad_json.get_document("origin").unwrap();
    assert_eq!(origin.get_str("source").unwrap(), "clicks");
    assert_eq!(origin.get_str("stream").unwrap(), nats.stream);
    assert_eq!(origin.get_str("subject").unwrap(), nats.subject);
    assert_eq!(by_seq[&21].get_str("path").unwrap(), "timestamp");

    assert_source_reports(&daemon, "clicks", 300, messages.len()).await;
    nats.delete().await;
}

#[tokio::test]
async fn nats_kill_9_mid_stream_then_restart_stores_and_counts_each_event_once() {
    let mongo = TestMongo::start().await;
    let nats = Nats::new().await;
    let at = Utc::now() - chrono::Duration::seconds(5);
    let total = 3000;
    let mut first = daemon_with(&mongo, &nats.source(""), &[]).await;
    let publisher = {
        let (js, subject) = (nats.js.clone(), nats.subject.clone());
        tokio::spawn(async move {
            for b in bodies(0..total, at) {
                js.publish(subject.clone(), b.into())
                    .await
                    .expect("publish")
                    .await
                    .expect("stored by the stream");
            }
        })
    };
    kill_mid_stream(&mut first, "clicks", total / 4).await;
    publisher.await.expect("publisher");
    let (_, unacked, _) = nats.consumer_state().await;
    eprintln!(
        "killed with {} events stored, {unacked} messages unacknowledged",
        stored(&mongo).await.len()
    );

    let second = daemon_with(&mongo, &nats.source(""), &[]).await;
    wait_stored(&mongo, total, &second).await;
    nats.wait_all_acked().await;
    show_runs(&first, &second).await;
    assert_exactly_once(&mongo, 0..total).await;
    nats.delete().await;
}

#[tokio::test]
async fn nats_with_mongodb_paused_acknowledges_nothing_unstored_and_resumes() {
    let mongo = TestMongo::start().await;
    let Some(pid) = mongo.server_pid() else {
        eprintln!("skipped: pausing MongoDB needs a local test server (MONGODB_URI is set)");
        return;
    };
    let nats = Nats::new().await;
    let at = Utc::now() - chrono::Duration::seconds(5);
    let total = 2000;
    let env = [("MONGOPULSE__INGEST__WRITER__WRITE_TIMEOUT_MS", "1000")];
    let mut first = daemon_with(&mongo, &nats.source("max_in_flight = 64"), &env).await;
    nats.publish(&bodies(0..total / 2, at)).await;
    wait_stored(&mongo, 1, &first).await;

    signal(pid, "STOP");
    nats.publish(&bodies(total / 2..total, at)).await;
    // The daemon takes at most its 64 slots, then waits: it retries, acknowledging nothing.
    support::until("the source retries while MongoDB is paused", || async {
        metric(
            &first.metrics().await,
            "mongopulse_source_retries_total{source=\"clicks\"}",
        ) > 0.0
    })
    .await;
    let (pending, unacked, _) = nats.consumer_state().await;
    assert!(unacked <= 64, "bounded: {unacked} messages held");
    assert!(pending > 0, "the rest waits in the stream");
    // Killed while MongoDB is paused: what it acknowledged is all that counts now.
    first.signal("KILL");
    first.wait(support::PATIENCE);
    let (_, _, acked_through) = nats.consumer_state().await;
    signal(pid, "CONT");
    // Every message the stream holds as acknowledged has all its events stored.
    let seqs = stored(&mongo).await;
    let published: Vec<Vec<u8>> = [bodies(0..total / 2, at), bodies(total / 2..total, at)].concat();
    let unstored: Vec<i64> = published
        .iter()
        .take(acked_through as usize)
        .flat_map(|b| seqs_in(b))
        .filter(|s| !seqs.contains_key(s))
        .collect();
    assert!(
        unstored.is_empty(),
        "acknowledged through message {acked_through}, but these events were not stored: {unstored:?}"
    );

    let second = daemon_with(&mongo, &nats.source("max_in_flight = 64"), &env).await;
    wait_stored(&mongo, total, &second).await;
    nats.wait_all_acked().await;
    show_runs(&first, &second).await;
    assert_exactly_once(&mongo, 0..total).await;
    nats.delete().await;
}

// ---------------------------------------------------------------- RabbitMQ (AMQP 0-9-1)

#[tokio::test]
async fn amqp_events_are_stored_and_counted_and_bad_messages_dead_lettered_with_coordinates() {
    let mongo = TestMongo::start().await;
    let rabbit = Rabbit::new().await;
    let at = Utc::now() - chrono::Duration::seconds(5);
    let mut messages = bodies(0..300, at);
    messages.insert(7, b"{\"timestamp\": ".to_vec());
    rabbit.publish(&messages).await;

    let daemon = daemon_with(&mongo, &rabbit.source(), &[]).await;
    wait_stored(&mongo, 300, &daemon).await;
    support::until("every message acknowledged", || async {
        let m = daemon.metrics().await;
        metric(
            &m,
            "mongopulse_source_messages_acked_total{source=\"orders\"}",
        ) == messages.len() as f64
    })
    .await;
    assert_eq!(rabbit.ready().await, 0);
    assert_exactly_once(&mongo, 0..300).await;

    let letters = support::recount::all(&mongo, "dead_letters", doc! {}).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let origin = letters[0].get_document("origin").unwrap();
    assert_eq!(origin.get_str("kind").unwrap(), "amqp");
    assert_eq!(origin.get_str("queue").unwrap(), rabbit.queue);
    assert_eq!(origin.get_str("routingKey").unwrap(), rabbit.queue);
    assert!(origin.get_i64("deliveryTag").is_ok(), "{origin}");
    rabbit.delete().await;
}

#[tokio::test]
async fn amqp_kill_9_mid_stream_then_restart_stores_and_counts_each_event_once() {
    let mongo = TestMongo::start().await;
    let rabbit = Rabbit::new().await;
    let at = Utc::now() - chrono::Duration::seconds(5);
    let total = 3000;
    let mut first = daemon_with(&mongo, &rabbit.source(), &[]).await;
    let publisher = {
        let (channel, queue) = (rabbit.channel.clone(), rabbit.queue.clone());
        tokio::spawn(async move {
            for b in bodies(0..total, at) {
                let persistent = BasicProperties::default().with_delivery_mode(2);
                channel
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        &b,
                        persistent,
                    )
                    .await
                    .expect("publish");
            }
        })
    };
    kill_mid_stream(&mut first, "orders", total / 4).await;
    publisher.await.expect("publisher");

    let second = daemon_with(&mongo, &rabbit.source(), &[]).await;
    wait_stored(&mongo, total, &second).await;
    support::until("the queue is drained", || async {
        rabbit.ready().await == 0
    })
    .await;
    show_runs(&first, &second).await;
    assert_exactly_once(&mongo, 0..total).await;
    rabbit.delete().await;
}

#[tokio::test]
async fn a_source_that_cannot_connect_makes_the_daemon_not_ready_and_says_why() {
    let mongo = TestMongo::start().await;
    // A port nothing listens on: the daemon runs, and readiness names the source.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let config = format!(
        "[[ingest.sources]]\nkind = \"nats\"\nname = \"gone\"\nurl = \"nats://127.0.0.1:{port}\"\nstream = \"X\"\n"
    );
    let path =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{}.toml", unique("gone")));
    std::fs::write(&path, config).unwrap();
    let daemon = Daemon::spawn(
        &mongo,
        &[("MONGOPULSE_CONFIG", &path.display().to_string())],
    );
    support::until("readiness names the source that is down", || async {
        let Ok(r) = reqwest::get(daemon.url("/readyz")).await else {
            return false;
        };
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(json!({}));
        status == 503
            && body["mongodb"] == "ok"
            && body["collections"] == "ready"
            && body["sources"]["gone"]
                .as_str()
                .is_some_and(|s| s.contains("cannot connect"))
    })
    .await;
    let m = daemon.metrics().await;
    assert_eq!(
        metric(&m, "mongopulse_source_up{source=\"gone\"}"),
        0.0,
        "{m}"
    );
    // HTTP ingest still works meanwhile.
    let (status, body) = daemon.post_json(&json!([seed_event(1, Utc::now())])).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_bad_source_entry_stops_the_daemon_at_start_with_advice() {
    let mongo = TestMongo::start().await;
    let config = "[[ingest.sources]]\nkind = \"nats\"\nname = \"a b\"\nstream = \"X\"\n";
    let path =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{}.toml", unique("bad")));
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mongopulsed"))
        .env("MONGOPULSE_CONFIG", &path)
        .env("MONGOPULSE__MONGODB__URI", &mongo.uri)
        .arg("print-config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("name 'a b'"), "{err}");
}

// ---------------------------------------------------------------- MQTT (Mosquitto)

#[tokio::test]
async fn mqtt_events_are_stored_and_counted_and_bad_messages_dead_lettered_with_coordinates() {
    let mongo = TestMongo::start().await;
    let mut mqtt = Mqtt::new().await;
    let client_id = format!("t{}", std::process::id() % 1_000_000);
    let daemon = mqtt_daemon(&mongo, &mqtt.source(&format!("{client_id}a"))).await;
    let at = Utc::now() - chrono::Duration::seconds(5);
    let mut messages = bodies(0..300, at);
    messages.insert(5, b"[1, 2".to_vec());
    mqtt.publish(&messages).await;
    wait_stored(&mongo, 300, &daemon).await;
    support::until("every message acknowledged", || async {
        let m = daemon.metrics().await;
        metric(
            &m,
            "mongopulse_source_messages_acked_total{source=\"devices\"}",
        ) == messages.len() as f64
    })
    .await;
    assert_exactly_once(&mongo, 0..300).await;
    let letters = support::recount::all(&mongo, "dead_letters", doc! {}).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let origin = letters[0].get_document("origin").unwrap();
    assert_eq!(origin.get_str("kind").unwrap(), "mqtt");
    assert_eq!(origin.get_str("topic").unwrap(), mqtt.topic);
    assert!(origin.get_i32("packetId").is_ok(), "{origin}");
}

#[tokio::test]
async fn mqtt_kill_9_mid_stream_then_restart_stores_and_counts_each_event_once() {
    let mongo = TestMongo::start().await;
    let mut mqtt = Mqtt::new().await;
    let config = mqtt.source(&format!("t{}b", std::process::id() % 1_000_000));
    let mut first = mqtt_daemon(&mongo, &config).await;
    let at = Utc::now() - chrono::Duration::seconds(5);
    let total = 2000;
    // Published while the daemon works; paused while it is down, as the broker queues
    // a bounded number of messages for an absent session.
    let paused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let paused = paused.clone();
        tokio::spawn(async move {
            for chunk in bodies(0..total, at).chunks(10) {
                while paused.load(std::sync::atomic::Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                mqtt.publish(chunk).await;
            }
        })
    };
    kill_mid_stream(&mut first, "devices", total / 4).await;
    paused.store(true, std::sync::atomic::Ordering::SeqCst);
    let second = mqtt_daemon(&mongo, &config).await;
    paused.store(false, std::sync::atomic::Ordering::SeqCst);
    publisher.await.expect("publisher");
    wait_stored(&mongo, total, &second).await;
    show_runs(&first, &second).await;
    assert_exactly_once(&mongo, 0..total).await;
}

// ---------------------------------------------------------------- Kafka

/// The Kafka source's partitions this daemon holds, per its `/metrics`.
async fn kafka_partitions_held(daemon: &Daemon) -> usize {
    daemon
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("mongopulse_source_kafka_lag{"))
        .count()
}

#[tokio::test]
async fn kafka_events_are_stored_and_counted_and_bad_messages_dead_lettered_with_coordinates() {
    let mongo = TestMongo::start().await;
    let kafka = Kafka::new(3).await;
    let at = Utc::now() - chrono::Duration::seconds(5);
    // Messages 10 and 20 are partition 1 at offset 3 and partition 2 at offset 6.
    let messages = with_two_poison_messages(at);
    kafka.publish(&messages).await;

    let daemon = daemon_with(&mongo, &kafka.source(""), &[]).await;
    wait_stored(&mongo, 300, &daemon).await;
    kafka.wait_all_committed().await;
    assert_exactly_once(&mongo, 0..300).await;

    let letters = support::recount::all(&mongo, "dead_letters", doc! {}).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    // No client hears of a source's refused events: the log says they went there.
    let log = daemon.stderr();
    assert!(
        log.contains("message(s) with refused events went to dead_letters since the last such line (the latest: "),
        "{log}"
    );
    let at_coordinates = |partition: i32, offset: i64| {
        letters
            .iter()
            .find(|l| {
                let o = l.get_document("origin").unwrap();
                o.get_i32("partition").unwrap() == partition
                    && o.get_i64("offset").unwrap() == offset
            })
            .unwrap_or_else(|| panic!("no dead letter at {partition}/{offset}: {letters:?}"))
    };
    let bad_json = at_coordinates(1, 3);
    assert_eq!(bad_json.get_str("raw").unwrap(), "this is not json");
    let origin = bad_json.get_document("origin").unwrap();
    assert_eq!(origin.get_str("kind").unwrap(), "kafka");
    assert_eq!(origin.get_str("source").unwrap(), "views");
    assert_eq!(origin.get_str("topic").unwrap(), kafka.topic);
    assert_eq!(origin.get_str("group").unwrap(), kafka.group);
    assert_eq!(at_coordinates(2, 6).get_str("path").unwrap(), "timestamp");

    support::until("the lag of every partition reads 0", || async {
        let m = daemon.metrics().await;
        (0..3).all(|p| {
            m.lines().any(|l| {
                l.starts_with("mongopulse_source_kafka_lag{")
                    && l.contains(&format!("partition=\"{p}\""))
                    && l.ends_with(" 0")
            })
        })
    })
    .await;
    assert_source_reports(&daemon, "views", 300, messages.len()).await;
}

#[tokio::test]
async fn kafka_kill_9_mid_stream_then_restart_stores_and_counts_each_event_once() {
    let mongo = TestMongo::start().await;
    let kafka = Kafka::new(2).await;
    let at = Utc::now() - chrono::Duration::seconds(5);
    let total = 3000;
    let config = kafka.source("max_in_flight = 16");
    let mut first = daemon_with(&mongo, &config, &[]).await;
    let publisher = {
        let (producer, topic) = (kafka.producer.clone(), kafka.topic.clone());
        tokio::spawn(async move {
            for chunk in bodies(0..total, at).chunks(50) {
                support::brokers::publish_kafka(&producer, &topic, 2, chunk).await;
            }
        })
    };
    kill_mid_stream(&mut first, "views", total / 4).await;
    publisher.await.expect("publisher");
    eprintln!(
        "killed with {} events stored; committed {:?} of {:?}",
        stored(&mongo).await.len(),
        kafka.committed(),
        kafka.ends()
    );

    let second = daemon_with(&mongo, &config, &[]).await;
    wait_stored(&mongo, total, &second).await;
    kafka.wait_all_committed().await;
    show_runs(&first, &second).await;
    assert_exactly_once(&mongo, 0..total).await;
}

#[tokio::test]
async fn kafka_two_daemons_in_one_group_split_partitions_and_the_survivor_takes_over() {
    one_of_two_daemons_leaves_mid_stream("KILL").await;
}

#[tokio::test]
async fn kafka_a_daemon_stopped_mid_stream_commits_and_hands_its_partitions_over() {
    one_of_two_daemons_leaves_mid_stream("TERM").await;
}

/// Two daemons of one group share four partitions; one gets `signal` mid-stream and
/// the other ends up with every partition; every event is stored and counted once.
async fn one_of_two_daemons_leaves_mid_stream(signal: &str) {
    let mongo = TestMongo::start().await;
    let kafka = Kafka::new(4).await;
    let at = Utc::now() - chrono::Duration::seconds(5);
    let total = 4000;
    let config = kafka.source("max_in_flight = 16");
    let survivor = daemon_with(&mongo, &config, &[("MONGOPULSE__WRITER_ID", "a")]).await;
    let mut victim = daemon_with(&mongo, &config, &[("MONGOPULSE__WRITER_ID", "b")]).await;
    support::until("the two daemons split the four partitions", || async {
        kafka_partitions_held(&survivor).await == 2 && kafka_partitions_held(&victim).await == 2
    })
    .await;
    let publisher = {
        let (producer, topic) = (kafka.producer.clone(), kafka.topic.clone());
        tokio::spawn(async move {
            for chunk in bodies(0..total, at).chunks(50) {
                support::brokers::publish_kafka(&producer, &topic, 4, chunk).await;
            }
        })
    };
    // The victim holds half the partitions: an eighth of the stream is a quarter of its share.
    stop_mid_stream(&mut victim, "views", total / 8, signal).await;
    if signal == "TERM" {
        assert!(
            victim.stderr().contains("handed over partitions"),
            "a stopped daemon commits and hands over: {}",
            victim.stderr()
        );
    }
    support::until("the survivor holds every partition", || async {
        kafka_partitions_held(&survivor).await == 4
    })
    .await;
    // A partition the victim handed over clean (every message it took stored) needs
    // no lookups; one it held when killed may hold copies.
    let (victims_log, survivors_log) = (victim.stderr(), survivor.stderr());
    let last_line = |log: &str, what: &str| {
        log.lines()
            .rfind(|l| l.contains(what))
            .unwrap_or_default()
            .to_string()
    };
    let taken_over = last_line(&survivors_log, "assigned partitions");
    // Entries look like "topic/2 (Nothing)" and "topic/2 at Some(453) (clean)".
    let (line, keep, expected) = match signal {
        "KILL" => (
            last_line(&victims_log, "assigned partitions"),
            "",
            "MaybeCopies",
        ),
        _ => (
            last_line(&victims_log, "handed over partitions"),
            "(clean)",
            "Clean",
        ),
    };
    let victims: Vec<&str> = line
        .split('"')
        .filter(|entry| entry.starts_with(&kafka.topic) && entry.ends_with(keep))
        .filter_map(|entry| entry.split(' ').next())
        .collect();
    assert!(signal == "TERM" || !victims.is_empty(), "{line}");
    for partition in victims {
        assert!(
            taken_over.contains(&format!("{partition} ({expected})")),
            "{partition} should be taken over as {expected}: {taken_over}"
        );
    }
    publisher.await.expect("publisher");
    wait_stored(&mongo, total, &survivor).await;
    kafka.wait_all_committed().await;
    let by_writer = |w: &'static str| {
        let mongo = &mongo;
        async move {
            support::recount::all(mongo, "events", doc! { "writer": w })
                .await
                .len()
        }
    };
    let (a, b) = (by_writer("a").await, by_writer("b").await);
    assert!(a > 0 && b > 0, "both daemons stored events: a {a}, b {b}");
    // A killed daemon's last minutes are counted when it comes back under its
    // writer_id (recovery reads its events), as any daemon's after a crash; a
    // stopped one wrote them before it ended.
    let back = match signal {
        "KILL" => Some(daemon_with(&mongo, &config, &[("MONGOPULSE__WRITER_ID", "b")]).await),
        _ => None,
    };
    show_runs(&victim, &survivor).await;
    assert_exactly_once(&mongo, 0..total).await;
    drop(back);
}

#[tokio::test]
async fn kafka_with_mongodb_paused_commits_nothing_unstored_and_resumes() {
    let mongo = TestMongo::start().await;
    let Some(pid) = mongo.server_pid() else {
        eprintln!("skipped: pausing MongoDB needs a local test server (MONGODB_URI is set)");
        return;
    };
    let kafka = Kafka::new(2).await;
    let at = Utc::now() - chrono::Duration::seconds(5);
    let total = 2000;
    let env = [("MONGOPULSE__INGEST__WRITER__WRITE_TIMEOUT_MS", "1000")];
    let config = kafka.source("max_in_flight = 32");
    let mut first = daemon_with(&mongo, &config, &env).await;
    let published: Vec<Vec<u8>> = bodies(0..total, at);
    kafka.publish(&published[..published.len() / 2]).await;
    wait_stored(&mongo, 1, &first).await;

    // 32 messages a partition at most.
    let rest = kafka.publish(&published[published.len() / 2..]);
    pause_mongodb_then_kill(&mut first, pid, "views", 64, rest).await;
    let committed = kafka.committed();
    // Every message below a partition's committed offset has all its events stored.
    let seqs = stored(&mongo).await;
    let unstored: Vec<i64> = published
        .iter()
        .enumerate()
        .filter(|(i, _)| (*i as i64 / 2) < committed[i % 2])
        .flat_map(|(_, b)| seqs_in(b))
        .filter(|s| !seqs.contains_key(s))
        .collect();
    assert!(
        unstored.is_empty(),
        "committed through {committed:?}, but these events were not stored: {unstored:?}"
    );
    assert!(
        committed.iter().zip(kafka.ends()).any(|(c, e)| *c < e),
        "something was left to consume after the pause"
    );

    // The short write timeout was for the pause; the recovery runs with the usual one
    // (a slow server's inserts would otherwise time out and be retried over and over).
    let second = daemon_with(&mongo, &config, &[]).await;
    wait_stored(&mongo, total, &second).await;
    kafka.wait_all_committed().await;
    show_runs(&first, &second).await;
    assert_exactly_once(&mongo, 0..total).await;
}

#[tokio::test]
async fn kafka_broker_that_goes_away_is_reported_down_then_reconnected() {
    let mongo = TestMongo::start().await;
    let kafka = Kafka::new(1).await;
    let Some(mock) = &kafka.mock else {
        eprintln!("skipped: stopping the broker needs the mock cluster (MONGOPULSE_TEST_KAFKA_BROKERS is set)");
        return;
    };
    let at = Utc::now() - chrono::Duration::seconds(5);
    let daemon = daemon_with(&mongo, &kafka.source(""), &[]).await;
    kafka.publish(&bodies(0..100, at)).await;
    wait_stored(&mongo, 100, &daemon).await;

    mock.broker_down(1).expect("stop the mock broker");
    support::until(
        "readiness and /metrics say the Kafka source is down",
        || async {
            let Ok(r) = reqwest::get(daemon.url("/readyz")).await else {
                return false;
            };
            let body: Value = r.json().await.unwrap_or(json!({}));
            body["sources"]["views"]
                .as_str()
                .is_some_and(|s| s.starts_with("Kafka:"))
                && metric(
                    &daemon.metrics().await,
                    "mongopulse_source_up{source=\"views\"}",
                ) == 0.0
        },
    )
    .await;
    mock.broker_up(1).expect("start the mock broker again");
    kafka.publish(&bodies(100..200, at)).await;
    wait_stored(&mongo, 200, &daemon).await;
    support::until("the source is up again", || async {
        metric(
            &daemon.metrics().await,
            "mongopulse_source_up{source=\"views\"}",
        ) == 1.0
    })
    .await;
    kafka.wait_all_committed().await;
    assert_exactly_once(&mongo, 0..200).await;
}

#[tokio::test]
async fn loadgen_publishes_to_kafka_for_a_daemon_with_a_kafka_source() {
    let mongo = TestMongo::start().await;
    let kafka = Kafka::new(2).await;
    let daemon = daemon_with(&mongo, &kafka.source(""), &[]).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mongopulsed"))
        .args(["loadgen", "--rate", "1000", "--events", "300"])
        .args(["--kafka", &kafka.brokers, "--topic", &kafka.topic])
        .env("MONGOPULSE_LOADGEN_KEY", "unused-with-kafka")
        .stdin(std::process::Stdio::null())
        .stdout(support::capture::stdio("loadgen-kafka-stdout"))
        .stderr(support::capture::stdio("loadgen-kafka"))
        .status()
        .await
        .expect("run mongopulsed loadgen");
    assert!(out.success(), "loadgen --kafka failed");
    support::until("the daemon stored loadgen's 300 events", || async {
        let m = daemon.metrics().await;
        metric(
            &m,
            "mongopulse_source_events_total{source=\"views\",outcome=\"stored\"}",
        ) == 300.0
    })
    .await;
    kafka.wait_all_committed().await;
}

#[tokio::test]
async fn amqp_with_mongodb_paused_acknowledges_nothing_unstored_and_resumes() {
    let mongo = TestMongo::start().await;
    let Some(pid) = mongo.server_pid() else {
        eprintln!("skipped: pausing MongoDB needs a local test server (MONGODB_URI is set)");
        return;
    };
    let rabbit = Rabbit::new().await;
    let at = Utc::now() - chrono::Duration::seconds(5);
    let total = 2000;
    let env = [("MONGOPULSE__INGEST__WRITER__WRITE_TIMEOUT_MS", "1000")];
    let mut first = daemon_with(&mongo, &rabbit.source(), &env).await;
    rabbit.publish(&bodies(0..total / 2, at)).await;
    wait_stored(&mongo, 1, &first).await;

    // The prefetch bounds what it holds.
    let rest = bodies(total / 2..total, at);
    pause_mongodb_then_kill(&mut first, pid, "orders", 64, rabbit.publish(&rest)).await;

    // What the queue still holds was not acknowledged; everything else was, and must
    // be stored.
    let unacked_seqs: std::collections::BTreeSet<i64> = rabbit
        .held_once_no_consumer()
        .await
        .iter()
        .flat_map(|b| seqs_in(b))
        .collect();
    let seqs = stored(&mongo).await;
    let unstored: Vec<usize> = (0..total)
        .filter(|s| !unacked_seqs.contains(&(*s as i64)) && !seqs.contains_key(&(*s as i64)))
        .collect();
    assert!(
        unstored.is_empty(),
        "acknowledged but not stored: {unstored:?}"
    );
    assert!(
        !unacked_seqs.is_empty(),
        "something was left after the pause"
    );

    // The short write timeout was for the pause; the recovery runs with the usual one
    // (a slow server's inserts would otherwise time out and be retried over and over).
    let second = daemon_with(&mongo, &rabbit.source(), &[]).await;
    wait_stored(&mongo, total, &second).await;
    support::until("the queue is drained", || async {
        rabbit.ready().await == 0
    })
    .await;
    show_runs(&first, &second).await;
    assert_exactly_once(&mongo, 0..total).await;
    rabbit.delete().await;
}

/// The reader the tests above use for `/metrics` (tests/support/prom.rs).
#[test]
fn the_metrics_reader_matches_labels_as_a_set_and_unescapes_values() {
    let text = "# HELP x_total Some.\n# TYPE x_total counter\n\
                x_total{outcome=\"stored\",source=\"a b\"} 12\n\
                x_total{source=\"q\\\"}\",outcome=\"dead_letter\"} 3 1700000000000\n\
                up 1\n\
                lag{p=\"0\"} +Inf\n";
    assert_eq!(
        support::prom::value(text, "x_total{source=\"a b\",outcome=\"stored\"}"),
        Some(12.0)
    );
    assert_eq!(
        support::prom::value(text, "x_total{outcome=\"dead_letter\",source=\"q\\\"}\"}"),
        Some(3.0)
    );
    assert_eq!(support::prom::value(text, "x_total{source=\"a b\"}"), None);
    assert_eq!(support::prom::value(text, "up"), Some(1.0));
    assert_eq!(
        support::prom::value(text, "lag{p=\"0\"}"),
        Some(f64::INFINITY)
    );
    assert_eq!(support::prom::value(text, "missing"), None);
}
