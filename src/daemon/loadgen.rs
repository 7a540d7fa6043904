//! `mongopulsed loadgen`: realistic, seed-shaped traffic for trying the
//! product (the compose stack runs it so the dashboards have data).
//!
//! In: a daemon URL, an API key, a rate. Out: POSTs of batches of events,
//! with a line of progress every 10 seconds. The event types make the funnel
//! of the *Real-time analytics* dashboard (page_view → click → conversion);
//! with `invalid_fraction` a share of events is malformed on purpose, so the
//! rejection panels of the operations dashboard and `dead_letters` show something.
//! With `nats` set, batches are published to a NATS JetStream subject instead, and
//! with `kafka` to a Kafka topic, for a daemon that consumes them through a broker
//! source (the compose `broker` and `kafka` profiles).

use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};

pub struct LoadgenOptions {
    pub url: String,
    pub key: String,
    pub rate: f64,
    /// Stop after this many events (0: never).
    pub events: u64,
    /// Share of events sent malformed (0 to 1), refused by the daemon with a reason.
    pub invalid_fraction: f64,
    /// Minutes of past traffic sent first (0: none).
    pub history_minutes: u32,
    /// Publish to this NATS server (`nats://host:4222`) instead of posting to `url`.
    pub nats: Option<String>,
    /// The JetStream subject batches are published to, with `nats`.
    pub subject: String,
    /// Publish to these Kafka brokers (`host:9092[,…]`) instead of posting to `url`.
    pub kafka: Option<String>,
    /// The Kafka topic batches are published to, with `kafka`.
    pub topic: String,
}

const COUNTRIES: [(&str, &str, u32); 8] = [
    ("FR", "Paris", 30),
    ("US", "New York", 25),
    ("DE", "Berlin", 15),
    ("GB", "London", 10),
    ("JP", "Tokyo", 8),
    ("BR", "São Paulo", 5),
    ("IN", "Mumbai", 4),
    ("ES", "Madrid", 3),
];
const PAGES: [&str; 8] = [
    "/",
    "/products",
    "/products/winter-collection",
    "/cart",
    "/checkout",
    "/blog",
    "/help",
    "/about",
];
const TYPES: [(&str, u32); 5] = [
    ("page_view", 80),
    ("click", 14),
    ("add_to_cart", 3),
    ("checkout", 2),
    ("conversion", 1),
];

/// A small deterministic generator: no RNG crate needed for demo traffic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn weighted<'a, T>(&mut self, items: &'a [(T, u32)]) -> &'a T {
        let total: u32 = items.iter().map(|i| i.1).sum();
        let mut pick = self.below(total as u64) as u32;
        for (item, w) in items {
            if pick < *w {
                return item;
            }
            pick -= w;
        }
        &items[0].0
    }

    /// Roughly log-normal, for load times.
    fn log_normal(&mut self, median: f64) -> f64 {
        let u: f64 = (0..6)
            .map(|_| self.below(1000) as f64 / 1000.0)
            .sum::<f64>()
            - 3.0;
        median * (0.6 * u).exp()
    }
}

fn event(rng: &mut Rng, at_ms: i64) -> Value {
    let country = COUNTRIES
        .iter()
        .map(|c| ((c.0, c.1), c.2))
        .collect::<Vec<_>>();
    let (code, city) = *rng.weighted(&country);
    let event_type = *rng.weighted(&TYPES);
    let user = rng.below(5_000);
    let device = ["mobile", "desktop", "tablet"][rng.below(3) as usize];
    let browser = ["Chrome", "Safari", "Firefox", "Edge"][rng.below(4) as usize];
    // Mobile pages load slower, and Brazil slower still: something for the alerts to see.
    let slow = if device == "mobile" { 1.6 } else { 1.0 } * if code == "BR" { 1.8 } else { 1.0 };
    json!({
        "timestamp": at_ms,
        "metadata": {
            "eventType": event_type,
            "source": "loadgen",
            "version": "1.0",
            "dimensions": {
                "userId": format!("u{user}"),
                "sessionId": format!("s{}-{}", user, at_ms / 1_800_000),
                "deviceType": device,
                "browser": browser,
                "os": if device == "desktop" { "Windows" } else { "iOS" },
                "country": code,
                "city": city,
                "productId": format!("p{}", rng.below(200)),
                "campaignId": "demo"
            }
        },
        "metrics": {
            "pageLoadTime": (rng.log_normal(900.0 * slow)).round(),
            "timeOnPage": 5 + rng.below(300),
            "scrollDepth": rng.below(100) as f64 / 100.0
        },
        "attributes": { "landingPage": PAGES[rng.below(PAGES.len() as u64) as usize], "referrer": "https://google.com" }
    })
}

/// Spoils a valid event in one of two ways, so rejections come with two reasons.
fn spoil(rng: &mut Rng, mut event: Value) -> Value {
    if rng.below(2) == 0 {
        event.as_object_mut().map(|e| e.remove("timestamp"));
    } else {
        event["metrics"]["pageLoadTime"] = json!("slow");
    }
    event
}

/// What one POST achieved.
enum Posted {
    Accepted(u64),
    Failed,
}

/// Where batches go: the daemon's events API, or a NATS JetStream subject.
enum Sink {
    Http {
        client: reqwest::Client,
        url: String,
        key: String,
    },
    Nats {
        js: async_nats::jetstream::Context,
        subject: String,
    },
    Kafka {
        producer: rdkafka::producer::FutureProducer,
        topic: String,
    },
}

impl Sink {
    async fn send(&self, batch: &[Value]) -> Result<Posted, String> {
        match self {
            Sink::Http { client, url, key } => post(client, url, key, batch).await,
            Sink::Nats { js, subject } => {
                let body = serde_json::to_vec(batch).map_err(|e| e.to_string())?;
                // Counted once the stream has it (the publish acknowledgement).
                match js.publish(subject.clone(), body.into()).await {
                    Ok(ack) => match ack.await {
                        Ok(_) => Ok(Posted::Accepted(batch.len() as u64)),
                        Err(e) => {
                            tracing::warn!("the stream did not take a batch: {e}; is a stream bound to '{subject}'?");
                            Ok(Posted::Failed)
                        }
                    },
                    Err(e) => {
                        tracing::warn!("cannot publish to NATS: {e}; retrying");
                        Ok(Posted::Failed)
                    }
                }
            }
            Sink::Kafka { producer, topic } => {
                let body = serde_json::to_vec(batch).map_err(|e| e.to_string())?;
                let record = rdkafka::producer::FutureRecord::<(), [u8]>::to(topic).payload(&body);
                // Counted once the partition leader has it (the delivery report).
                match producer.send(record, Duration::from_secs(10)).await {
                    Ok(_) => Ok(Posted::Accepted(batch.len() as u64)),
                    Err((e, _)) => {
                        tracing::warn!("cannot publish to Kafka topic '{topic}': {e}; retrying");
                        Ok(Posted::Failed)
                    }
                }
            }
        }
    }
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    batch: &[Value],
) -> Result<Posted, String> {
    match http.post(url).bearer_auth(key).json(batch).send().await {
        Ok(r) if r.status().is_success() => {
            let body: Value = r.json().await.unwrap_or_default();
            Ok(Posted::Accepted(body["accepted"].as_u64().unwrap_or(0)))
        }
        Ok(r) => {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            tracing::warn!(
                "the daemon answered {status}: {}",
                text.chars().take(300).collect::<String>()
            );
            if status == reqwest::StatusCode::UNAUTHORIZED {
                return Err("the daemon refused the API key: pass --key (or MONGOPULSE_LOADGEN_KEY) with a key from MONGOPULSE_API_KEYS".into());
            }
            Ok(Posted::Failed)
        }
        Err(e) => {
            tracing::warn!("cannot reach {url}: {e}; retrying");
            Ok(Posted::Failed)
        }
    }
}

/// Sends events until stopped (or `events` were sent); returns how many were accepted.
///
/// With `history_minutes`, first sends that many minutes of past traffic at the same
/// rate, oldest first and as fast as the daemon takes it, so dashboards have a history
/// at once. The daemon refuses events whose minute it has already finalised, so this
/// needs `rollups.idle_finalize_secs` longer than the history (the tests set it).
pub async fn run(
    o: LoadgenOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<u64, String> {
    if !(0.0..=1.0).contains(&o.invalid_fraction) {
        return Err(format!(
            "--invalid-fraction must be between 0 and 1, got {}",
            o.invalid_fraction
        ));
    }
    if !(o.rate.is_finite() && o.rate > 0.0) {
        return Err(format!(
            "--rate must be a positive number of events per second, got {}",
            o.rate
        ));
    }
    let sink = match (&o.nats, &o.kafka) {
        (Some(_), Some(_)) => return Err("--nats and --kafka: choose one".into()),
        (None, Some(brokers)) => Sink::Kafka {
            producer: rdkafka::ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .set("acks", "all")
                .set("linger.ms", "20")
                .create()
                .map_err(|e| format!("cannot create a Kafka producer for {brokers}: {e}"))?,
            topic: o.topic.clone(),
        },
        (Some(server), None) => {
            let client = async_nats::connect(server.as_str()).await.map_err(|e| {
                format!(
                    "cannot connect to NATS at {}: {e}",
                    crate::sources::nats::masked_url(server)
                )
            })?;
            Sink::Nats {
                js: async_nats::jetstream::new(client),
                subject: o.subject.clone(),
            }
        }
        (None, None) => Sink::Http {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))?,
            url: format!("{}/v1/events", o.url.trim_end_matches('/')),
            key: o.key.clone(),
        },
    };
    // Ten batches a second at most, so a low rate still looks continuous.
    let per_batch = (o.rate / 10.0).ceil().max(1.0) as usize;
    let pause = Duration::from_secs_f64(per_batch as f64 / o.rate);
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let (mut accepted, mut sent, mut failed) = (0u64, 0u64, 0u64);
    // One in `every` events is spoiled (none when the fraction is 0).
    let every = (1.0 / o.invalid_fraction).round().max(1.0) as u64;
    let next = |rng: &mut Rng, at_ms: i64, n: u64| {
        let e = event(rng, at_ms);
        if o.invalid_fraction > 0.0 && n.is_multiple_of(every) {
            spoil(rng, e)
        } else {
            e
        }
    };
    tokio::pin!(stop);

    if o.history_minutes > 0 {
        let now = Utc::now().timestamp_millis();
        let span_ms = o.history_minutes as i64 * 60_000;
        let total = (o.rate * 60.0 * o.history_minutes as f64).round().max(1.0) as u64;
        let step = span_ms as f64 / total as f64;
        let mut i = 0u64;
        while i < total && (o.events == 0 || sent < o.events) {
            let n = (total - i).min(500);
            let batch: Vec<Value> = (0..n)
                .map(|k| {
                    let at = now - span_ms + ((i + k) as f64 * step) as i64;
                    next(&mut rng, at, sent + k + 1)
                })
                .collect();
            i += n;
            sent += n;
            tokio::select! {
                _ = &mut stop => return Ok(accepted),
                posted = sink.send(&batch) => match posted? {
                    Posted::Accepted(a) => accepted += a,
                    Posted::Failed => failed += n,
                },
            }
        }
        tracing::info!(
            sent,
            accepted,
            failed,
            minutes = o.history_minutes,
            "loadgen: history sent"
        );
    }

    let mut report = tokio::time::interval(Duration::from_secs(10));
    let mut tick = tokio::time::interval(pause);
    while o.events == 0 || sent < o.events {
        tokio::select! {
            _ = &mut stop => break,
            _ = report.tick() => tracing::info!(sent, accepted, failed, "loadgen"),
            _ = tick.tick() => {
                let now = Utc::now().timestamp_millis();
                let batch: Vec<Value> = (0..per_batch as u64).map(|k| next(&mut rng, now, sent + k + 1)).collect();
                sent += batch.len() as u64;
                match sink.send(&batch).await? {
                    Posted::Accepted(a) => accepted += a,
                    Posted::Failed => failed += batch.len() as u64,
                }
            }
        }
    }
    tracing::info!(sent, accepted, failed, "loadgen stopped");
    Ok(accepted)
}
