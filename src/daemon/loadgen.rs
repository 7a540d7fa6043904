//! `mongopulsed loadgen`: realistic, seed-shaped traffic for trying the
//! product (the compose stack runs it so the dashboards have data).
//!
//! In: a daemon URL, an API key, a rate. Out: POSTs of batches of events,
//! with a line of progress every 10 seconds. The event types make the funnel
//! of the *Real-time analytics* dashboard (page_view → click → conversion);
//! with `invalid_fraction` a share of events is malformed on purpose, so the
//! rejection panels of the operations dashboard and `dead_letters` show something.

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

fn event(rng: &mut Rng) -> Value {
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
        "timestamp": Utc::now().timestamp_millis(),
        "metadata": {
            "eventType": event_type,
            "source": "loadgen",
            "version": "1.0",
            "dimensions": {
                "userId": format!("u{user}"),
                "sessionId": format!("s{}-{}", user, Utc::now().timestamp() / 1800),
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

/// Sends events until stopped (or `events` were sent); returns how many were accepted.
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
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let url = format!("{}/v1/events", o.url.trim_end_matches('/'));
    // Ten batches a second at most, so a low rate still looks continuous.
    let per_batch = (o.rate / 10.0).ceil().max(1.0) as usize;
    let pause = Duration::from_secs_f64(per_batch as f64 / o.rate);
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let (mut accepted, mut sent, mut failed) = (0u64, 0u64, 0u64);
    let mut report = tokio::time::interval(Duration::from_secs(10));
    let mut tick = tokio::time::interval(pause);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = report.tick() => tracing::info!(sent, accepted, failed, "loadgen"),
            _ = tick.tick() => {
                // One in `every` events is spoiled (none when the fraction is 0).
                let every = (1.0 / o.invalid_fraction).round().max(1.0) as u64;
                let batch: Vec<Value> = (0..per_batch)
                    .map(|i| {
                        let e = event(&mut rng);
                        let n = sent + i as u64 + 1;
                        if o.invalid_fraction > 0.0 && n % every == 0 { spoil(&mut rng, e) } else { e }
                    })
                    .collect();
                sent += batch.len() as u64;
                match http.post(&url).bearer_auth(&o.key).json(&batch).send().await {
                    Ok(r) if r.status().is_success() => {
                        let body: Value = r.json().await.unwrap_or_default();
                        accepted += body["accepted"].as_u64().unwrap_or(0);
                    }
                    Ok(r) => {
                        failed += batch.len() as u64;
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        tracing::warn!("the daemon answered {status}: {}", text.chars().take(300).collect::<String>());
                        if status == reqwest::StatusCode::UNAUTHORIZED {
                            return Err("the daemon refused the API key: pass --key (or MONGOPULSE_LOADGEN_KEY) with a key from MONGOPULSE_API_KEYS".into());
                        }
                    }
                    Err(e) => {
                        failed += batch.len() as u64;
                        tracing::warn!("cannot reach {url}: {e}; retrying");
                    }
                }
                if o.events > 0 && sent >= o.events {
                    break;
                }
            }
        }
    }
    tracing::info!(sent, accepted, failed, "loadgen stopped");
    Ok(accepted)
}
