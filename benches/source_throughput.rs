//! Ingest throughput per path: the same seed-shaped events pushed through HTTP and
//! through each broker source (Kafka, NATS JetStream, RabbitMQ, MQTT) until the daemon has
//! stored and counted them all. Prints events/s, the ratio to HTTP, and the CPU
//! seconds the daemon, the MongoDB server and the broker spent, which says where the
//! time goes. Run by `scripts/bench-sources.sh`; not a criterion benchmark: it
//! measures whole processes, one run each, in one run of this program.
//!
//! HTTP: 8 clients post the batches concurrently. Brokers: the messages are
//! published first (untimed), then the clock runs from the moment the source is
//! consuming to the last event stored (MQTT is published while the daemon
//! consumes, staying within the broker's per-session queue; Kafka too, within what
//! the mock cluster keeps of a partition). Kafka's broker is librdkafka's mock
//! cluster, which runs inside this program: its CPU is this program's.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use support::brokers::{daemon_with, metric, Kafka, Mqtt, Nats, Rabbit};
use support::daemon::{seed_event, Daemon, API_KEY};
use support::mongo::TestMongo;

/// User + system CPU seconds of a process so far (`/proc/PID/stat`), 0 if gone.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start after ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// The pids of a broker's processes (`pgrep -x`).
fn pids(name: &str) -> Vec<u32> {
    std::process::Command::new("pgrep")
        .args(["-x", name])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

struct Row {
    path: &'static str,
    seconds: f64,
    daemon_cpu: f64,
    mongo_cpu: f64,
    broker_cpu: f64,
}

/// Where the clock and the CPU counters start.
struct Clock {
    started: Instant,
    daemon: (u32, f64),
    mongo: (u32, f64),
    broker: Vec<(u32, f64)>,
}

impl Clock {
    fn start(daemon: &Daemon, mongo: &TestMongo, broker: &str) -> Clock {
        let at = |pid: u32| (pid, cpu_secs(pid));
        Clock {
            started: Instant::now(),
            daemon: at(daemon.pid()),
            mongo: at(mongo.server_pid().unwrap_or(0)),
            broker: match broker {
                "this program" => vec![std::process::id()],
                name => pids(name),
            }
            .into_iter()
            .map(at)
            .collect(),
        }
    }

    fn stop(self, path: &'static str) -> Row {
        let spent = |(pid, before): (u32, f64)| cpu_secs(pid) - before;
        Row {
            path,
            seconds: self.started.elapsed().as_secs_f64(),
            daemon_cpu: spent(self.daemon),
            mongo_cpu: spent(self.mongo),
            broker_cpu: self.broker.into_iter().map(spent).sum(),
        }
    }
}

async fn accepted(daemon: &Daemon) -> usize {
    metric(
        &daemon.metrics().await,
        "mongopulse_ingest_events_accepted_total",
    ) as usize
}

/// Broker messages the daemon acknowledged: each one's events are stored (or were
/// already, when a write that timed out completed after all).
async fn acked(daemon: &Daemon, source: &str) -> usize {
    let name = format!("mongopulse_source_messages_acked_total{{source=\"{source}\"}}");
    metric(&daemon.metrics().await, &name) as usize
}

async fn wait_acked(daemon: &Daemon, source: &str, messages: usize) {
    wait_for(daemon, "messages acknowledged", messages, || {
        acked(daemon, source)
    })
    .await
}

async fn wait_accepted(daemon: &Daemon, n: usize) {
    wait_for(daemon, "events stored", n, || accepted(daemon)).await
}

/// Waits until `count` reaches `n`, saying how far it is every 10 s; stops with the
/// daemon's log when nothing moved for a minute.
async fn wait_for<F, Fut>(daemon: &Daemon, what: &str, n: usize, mut count: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let (mut last, mut moved, mut said) = (0, Instant::now(), Instant::now());
    loop {
        let now = count().await;
        if now >= n {
            return;
        }
        if now != last {
            (last, moved) = (now, Instant::now());
        }
        if said.elapsed() > Duration::from_secs(10) {
            eprintln!("  {now} of {n} {what}");
            said = Instant::now();
        }
        let log = daemon.stderr();
        let tail: String = log
            .chars()
            .rev()
            .take(4000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        assert!(
            moved.elapsed() < Duration::from_secs(60),
            "stuck at {now} of {n}: {tail}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_consuming(daemon: &Daemon, source: &str) {
    let up = format!("mongopulse_source_up{{source=\"{source}\"}}");
    while metric(&daemon.metrics().await, &up) < 1.0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// NDJSON bodies of `batch` events each, `total` events in all.
fn batches(total: usize, batch: usize) -> Vec<Vec<u8>> {
    let at = Utc::now() - chrono::Duration::seconds(5);
    (0..total)
        .step_by(batch)
        .map(|start| {
            (start..(start + batch).min(total))
                .map(|seq| format!("{}\n", seed_event(seq, at)))
                .collect::<String>()
                .into_bytes()
        })
        .collect()
}

async fn http(total: usize, bodies: &[Vec<u8>]) -> Row {
    let mongo = TestMongo::start().await;
    let daemon = Daemon::start(&mongo, &[]).await;
    let clock = Clock::start(&daemon, &mongo, "none");
    let next = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(bodies.to_vec());
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (next, bodies, url, http) = (
                next.clone(),
                bodies.clone(),
                daemon.url("/v1/events"),
                daemon.http.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { break };
                    loop {
                        let answer = http
                            .post(&url)
                            .bearer_auth(API_KEY)
                            .header("content-type", "application/x-ndjson")
                            .body(body.clone())
                            .send()
                            .await;
                        if answer.is_ok_and(|a| a.status().is_success()) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.await.expect("client");
    }
    wait_accepted(&daemon, total).await;
    clock.stop("HTTP (8 clients)")
}

async fn kafka(bodies: &[Vec<u8>]) -> Row {
    let mongo = TestMongo::start().await;
    let kafka = Kafka::new(4).await;
    let daemon = daemon_with(&mongo, &kafka.source(""), &[]).await;
    // The clock starts once the group gave the daemon its four partitions.
    while daemon
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("mongopulse_source_kafka_lag{"))
        .count()
        < 4
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let clock = Clock::start(&daemon, &mongo, "this program");
    // Published while the daemon consumes: the mock cluster keeps only the last 5 MB
    // of a partition, so at most ~8 MB (a few hundred messages) stay ahead of it.
    let ahead = (8 << 20) / bodies.first().map_or(1, Vec::len).max(1);
    for (i, chunk) in bodies.chunks(100).enumerate() {
        while (i * 100).saturating_sub(acked(&daemon, "views").await) > ahead {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        kafka.publish(chunk).await;
    }
    wait_acked(&daemon, "views", bodies.len()).await;
    clock.stop("Kafka (4 partitions)")
}

async fn nats(bodies: &[Vec<u8>]) -> Row {
    let mongo = TestMongo::start().await;
    let nats = Nats::new().await;
    nats.publish(bodies).await;
    let daemon = daemon_with(&mongo, &nats.source(""), &[]).await;
    wait_consuming(&daemon, "clicks").await;
    let clock = Clock::start(&daemon, &mongo, "nats-server");
    wait_acked(&daemon, "clicks", bodies.len()).await;
    let row = clock.stop("NATS JetStream");
    nats.delete().await;
    row
}

async fn amqp(bodies: &[Vec<u8>]) -> Row {
    let mongo = TestMongo::start().await;
    let rabbit = Rabbit::new().await;
    rabbit.publish(bodies).await;
    let daemon = daemon_with(&mongo, &rabbit.source(), &[]).await;
    wait_consuming(&daemon, "orders").await;
    let clock = Clock::start(&daemon, &mongo, "beam.smp");
    wait_acked(&daemon, "orders", bodies.len()).await;
    let row = clock.stop("RabbitMQ (AMQP)");
    rabbit.delete().await;
    row
}

async fn mqtt(bodies: &[Vec<u8>]) -> Row {
    let mongo = TestMongo::start().await;
    let mut mqtt = Mqtt::new().await;
    let daemon = daemon_with(
        &mongo,
        &mqtt.source(&format!("bench{}", std::process::id() % 100_000)),
        &[],
    )
    .await;
    wait_consuming(&daemon, "devices").await;
    let clock = Clock::start(&daemon, &mongo, "mosquitto");
    // Mosquitto queues at most 1,000 messages per session beyond those in flight.
    for (i, chunk) in bodies.chunks(200).enumerate() {
        while (i * 200).saturating_sub(acked(&daemon, "devices").await) > 600 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        mqtt.publish(chunk).await;
    }
    wait_acked(&daemon, "devices", bodies.len()).await;
    clock.stop("MQTT (QoS 1)")
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let batch: usize = std::env::var("BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    // PATHS=mqtt,nats runs only those (HTTP always runs first, for the ratio).
    let paths = std::env::var("PATHS").unwrap_or_else(|_| "kafka,nats,amqp,mqtt".into());
    let bodies = batches(total, batch);
    eprintln!("HTTP…");
    let mut rows = vec![http(total, &bodies).await];
    for path in paths.split(',') {
        eprintln!("{path}…");
        rows.push(match path.trim() {
            "kafka" => kafka(&bodies).await,
            "nats" => nats(&bodies).await,
            "amqp" => amqp(&bodies).await,
            "mqtt" => mqtt(&bodies).await,
            other => panic!("PATHS: unknown path {other}; use kafka, nats, amqp, mqtt"),
        });
    }

    let http_rate = total as f64 / rows[0].seconds;
    println!(
        "{total} seed-shaped events, {batch} per request or message (NDJSON), stored and counted; the MongoDB stand-in as database\n"
    );
    println!(
        "{:18} {:>9} {:>12} {:>9} {:>11} {:>12} {:>11}",
        "path", "seconds", "events/s", "× HTTP", "daemon CPU", "MongoDB CPU", "broker CPU"
    );
    for r in &rows {
        let rate = total as f64 / r.seconds;
        let broker = if r.path.starts_with("HTTP") {
            "—".to_string()
        } else {
            format!("{:.1}s", r.broker_cpu)
        };
        println!(
            "{:18} {:>9.1} {:>12.0} {:>9.2} {:>10.1}s {:>11.1}s {:>11}",
            r.path,
            r.seconds,
            rate,
            rate / http_rate,
            r.daemon_cpu,
            r.mongo_cpu,
            broker
        );
    }
    println!("\ngoal: every broker source ≥ 0.8× HTTP, the daemon (not the broker client) the bottleneck; CPU seconds over the timed part of each run, on this machine's cores");
}
