//! A steady HTTP load on the daemon for the fault tests: concurrent senders post
//! batches of seed-shaped events (each with a unique `attributes.seq`) and record what
//! every answer means, so a test can check afterwards that each event answered 2xx is
//! stored exactly once.
//!
//! In: the daemon's base URL (which a test changes with [`SteadyLoad::retarget`] when it
//! restarts the daemon, whose port changes), how many senders, the batch size and an
//! optional total rate. Out: a [`Tally`]: the acknowledged seqs, the 503s with
//! `Retry-After`, the requests never answered (daemon down) and every answer that is
//! none of those (a wrong answer: must stay empty).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use tokio::task::JoinHandle;

use super::daemon::{seed_event, API_KEY};

/// What the senders saw, all senders together.
#[derive(Debug, Default)]
pub struct Tally {
    /// `attributes.seq` of every event answered 2xx and not in the answer's `rejected`.
    pub acknowledged: BTreeSet<i64>,
    /// Events the daemon refused in a 2xx answer as too late (not stored, by design).
    pub refused_late: usize,
    /// Answers 503 with `Retry-After`: "not stored, try again".
    pub answered_503: usize,
    /// Requests that got no HTTP answer (the daemon was down or restarting).
    pub unanswered: usize,
    /// Batches posted.
    pub batches: usize,
    /// Anything else: 503 without `Retry-After`, another status, a 2xx whose counts
    /// disagree with its batch, a refusal other than lateness.
    pub wrong: Vec<String>,
}

/// The running senders.
pub struct SteadyLoad {
    stop: Arc<AtomicBool>,
    target: Arc<RwLock<String>>,
    tally: Arc<Mutex<Tally>>,
    tasks: Vec<JoinHandle<()>>,
}

/// How to load the daemon.
#[derive(Clone, Debug)]
pub struct LoadShape {
    pub senders: usize,
    pub batch: usize,
    /// Events per second for all senders together; `None`: as fast as answers come.
    pub rate: Option<f64>,
    /// The first `attributes.seq`; each event gets the next.
    pub first_seq: usize,
}

impl SteadyLoad {
    /// Starts the senders against `base_url` (`http://127.0.0.1:PORT`).
    pub fn start(base_url: &str, shape: LoadShape) -> SteadyLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let target = Arc::new(RwLock::new(base_url.to_string()));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let next_seq = Arc::new(AtomicUsize::new(shape.first_seq));
        // A client timeout well past the daemon's own write timeouts: the daemon decides
        // (2xx or 503), the client only gives up on a hang.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .build()
            .expect("http client");
        let pause = shape.rate.map(|rate| {
            Duration::from_secs_f64(shape.batch as f64 * shape.senders as f64 / rate.max(1.0))
        });
        let tasks = (0..shape.senders)
            .map(|_| {
                let (stop, target, tally, next_seq, http) = (
                    stop.clone(),
                    target.clone(),
                    tally.clone(),
                    next_seq.clone(),
                    http.clone(),
                );
                let batch = shape.batch;
                tokio::spawn(async move {
                    let mut pace = pause.map(|p| {
                        let mut i = tokio::time::interval(p);
                        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        i
                    });
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(p) = pace.as_mut() {
                            p.tick().await;
                        }
                        let first = next_seq.fetch_add(batch, Ordering::Relaxed);
                        let now = Utc::now();
                        let body = Value::Array(
                            (first..first + batch).map(|s| seed_event(s, now)).collect(),
                        );
                        let url = format!("{}/v1/events", target.read().unwrap());
                        let answer = http
                            .post(&url)
                            .bearer_auth(API_KEY)
                            .json(&body)
                            .send()
                            .await;
                        let pause_after = record(&tally, first, batch, answer).await;
                        if let Some(p) = pause_after {
                            tokio::time::sleep(p).await;
                        }
                    }
                })
            })
            .collect();
        SteadyLoad {
            stop,
            target,
            tally,
            tasks,
        }
    }

    /// Sends to a restarted daemon from now on.
    pub fn retarget(&self, base_url: &str) {
        *self.target.write().unwrap() = base_url.to_string();
    }

    pub fn acknowledged(&self) -> usize {
        self.tally.lock().unwrap().acknowledged.len()
    }

    pub fn answered_503(&self) -> usize {
        self.tally.lock().unwrap().answered_503
    }

    /// Stops the senders once their requests in flight are answered.
    pub async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("a sender ran without panicking");
        }
        std::mem::take(&mut *self.tally.lock().unwrap())
    }
}

/// Records one answer; returns how long to wait before the next request.
async fn record(
    tally: &Mutex<Tally>,
    first: usize,
    batch: usize,
    answer: reqwest::Result<reqwest::Response>,
) -> Option<Duration> {
    let Ok(r) = answer else {
        let mut t = tally.lock().unwrap();
        t.batches += 1;
        t.unanswered += 1;
        // The daemon is down: try again soon, as a client with a short backoff would.
        return Some(Duration::from_millis(50));
    };
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let text = r.text().await.unwrap_or_default();
    let mut t = tally.lock().unwrap();
    t.batches += 1;
    match status {
        200..=299 => {
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let mut refused = BTreeSet::new();
            for r in body["rejected"].as_array().into_iter().flatten() {
                let index = r["index"].as_u64().unwrap_or(u64::MAX) as usize;
                let reason = r["reason"].as_str().unwrap_or("");
                if index < batch && reason.contains("too late") {
                    refused.insert(index);
                } else {
                    t.wrong.push(format!("{status}, refused {r}"));
                }
            }
            let accepted = body["accepted"].as_u64().map(|n| n as usize);
            if accepted != Some(batch - refused.len()) {
                t.wrong.push(format!("{status} with {text}"));
                return None;
            }
            t.refused_late += refused.len();
            t.acknowledged.extend(
                (0..batch)
                    .filter(|i| !refused.contains(i))
                    .map(|i| (first + i) as i64),
            );
            None
        }
        503 if retry_after.is_some() => {
            t.answered_503 += 1;
            // A client honours Retry-After; capped so the load stays steady in a test.
            Some(Duration::from_secs(retry_after.unwrap_or(1)).min(Duration::from_millis(500)))
        }
        _ => {
            t.wrong.push(format!(
                "{status} (Retry-After: {retry_after:?}): {}",
                text.chars().take(300).collect::<String>()
            ));
            None
        }
    }
}
